"""Keyword-free talk: three disjoint Spanish text corpora and near-miss words derived from the commands.

Three uses, three disjoint sets (tests check it): ``train`` for the speech negatives the model learns as
background (``pipeline.stages.voices``, ``pipeline.authoring.speech_negatives``), ``dev`` for the development
set the detector is calibrated on and ``eval`` for the evaluation set (``pipeline.eval.holdout_tts``). A
detector calibrated on sentences the model trained on would be calibrated on negatives too easy, and the
evaluation must not hear anything either has heard.

Near misses share sounds with the commands but are other words. They are derived from each command's words
(:func:`near_misses`) by rules that differ between the splits (different endings, different prefix
lengths), so a user's own commands get their own near misses; a derived word that contains a command word
is dropped, and each split's words are disjoint from the other splits' (the evaluation's take precedence).

The corpora are Spanish. For commands in another language the same sentences are read by that language's
voices: talk to the model's ear, though not that language's words (record real talk in FONDO for better).

    from pipeline.audio.texts import negative_text
    text = negative_text(rng, "train", vocabulary, n_sentences=3)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from pipeline.core.vocabulary import Vocabulary, words_of

SPLITS: tuple[str, ...] = ("train", "dev", "eval")


@dataclasses.dataclass(frozen=True)
class Corpus:
    phrases: tuple[str, ...]
    subjects: tuple[str, ...]
    verbs: tuple[str, ...]
    objects: tuple[str, ...]
    complements: tuple[str, ...]


CORPORA: dict[str, Corpus] = {
    "train": Corpus(
        phrases=(
            'Buenos días a todos.', '¿Dónde está la estación de autobuses?', 'Ayer salimos tarde del trabajo.',
            'Repetimos la prueba por la tarde.', 'Cancelé la cita con el médico.',
            'Los principios son importantes.', 'Continuamos después de comer.', 'Se levantaron muy temprano.',
            'Acoplamos las dos piezas ayer.', 'El príncipe llegó en barco.', 'Tengo que llamar al dentista.',
            'La sopa está demasiado caliente.', '¿Me pasas la sal, por favor?', 'El perro duerme en el sofá.',
            'Hay mucho tráfico en la autopista.', 'Compramos fruta en la tienda de la esquina.',
            'La impresora no tiene papel.', 'Abre la ventana un momento.', 'El ascensor está averiado otra vez.',
            '¿A qué hora cierra la farmacia?', 'Mi coche es de color azul.', 'Los viernes comemos pescado.',
            'El examen fue bastante difícil.', 'Hace frío en la montaña.', 'Guarda los documentos en el cajón.',
            'Esta semana trabajo por la noche.', 'El paquete llegó roto.', 'Vamos a pintar la cocina de blanco.',
            'No encuentro el cargador del móvil.', 'La música está muy alta.',
            'El contenido del correo era urgente.', 'Salió el sol después de la tormenta.',
        ),
        subjects=(
            'Mi primo', 'La vecina del tercero', 'El electricista', 'Nuestra profesora de inglés', 'El panadero',
            'Mis padres', 'La enfermera', 'Un compañero de clase', 'El portero', 'La directora',
        ),
        verbs=(
            'llevó', 'recogió', 'dejó', 'probó', 'pidió', 'subió', 'perdió', 'cambió', 'movió', 'abrió',
        ),
        objects=(
            'el paraguas negro', 'una bolsa de naranjas', 'la escalera larga', 'el ordenador portátil',
            'tres botellas de agua', 'la maleta azul', 'un cuaderno viejo', 'las cortinas del salón',
            'el cable de la lámpara', 'una caja de galletas',
        ),
        complements=(
            'esta mañana', 'en el garaje', 'antes del almuerzo', 'al lado de la puerta', 'por la noche',
            'sin ayuda', 'el martes', 'en la oficina', 'con prisa', 'detrás del armario',
        ),
    ),
    "dev": Corpus(
        phrases=(
            'Che, ¿me alcanzás el mate?', 'El colectivo viene lleno a esta hora.', 'Salgo en cinco minutos.',
            'Repito la pregunta por si no la oíste.', 'Cancelaste la reserva del restaurante.',
            'El principito es un libro muy lindo.', 'La continuidad del proyecto está asegurada.',
            'Te levantaste temprano ayer, ¿no?', 'El elevador de carga está trabado.',
            'El copiloto revisó el mapa.', 'Mañana hay partido en el estadio del club.',
            'Dejé la bicicleta atada al poste.', 'La heladera hace un ruido extraño.',
            'El depósito cierra a las seis.', 'Pasame la llave inglesa, por favor.',
            'La batería del taladro está descargada.', 'Hoy llueve en toda la provincia.',
            'El gerente firmó los papeles.', 'Anotá el número de pedido.', 'La cinta transportadora se detuvo.',
            'Tenemos inventario el jueves.', 'La luz del pasillo parpadea.', 'Subí el volumen de la radio.',
            'El camión de reparto ya llegó.', '¿Cuántas cajas quedan en el estante?',
        ),
        subjects=(
            'El operario', 'Mi cuñada', 'El encargado del depósito', 'La señora de la limpieza', 'Mi sobrino',
            'El chofer', 'La contadora', 'Un cliente nuevo', 'El mecánico', 'La recepcionista',
        ),
        verbs=(
            'ordenó', 'revisó', 'cargó', 'descargó', 'contó', 'midió', 'pesó', 'etiquetó', 'envolvió', 'apiló',
        ),
        objects=(
            'los repuestos del motor', 'una pila de cajas', 'el pedido de la semana',
            'las herramientas del taller', 'los bidones de aceite', 'el rollo de cable', 'las facturas viejas',
            'una bolsa de tornillos', 'el carro de compras', 'los paquetes del correo',
        ),
        complements=(
            'a la madrugada', 'en el galpón', 'antes del mediodía', 'junto al portón', 'durante la tormenta',
            'con mucho cuidado', 'el domingo', 'en la terraza', 'a las apuradas', 'bajo la escalera',
        ),
    ),
    "eval": Corpus(
        phrases=(
            'Ayer salí temprano de casa.', 'El mensaje fue repetido dos veces.',
            'El vuelo fue cancelado por la niebla.', 'Al principio no entendía nada.',
            'Es un principiante con mucha suerte.', 'La reunión continúa mañana.', 'Levanta la caja con cuidado.',
            'La pieza ya está acoplada.', '¿Qué hora es?', 'Hoy hace mucho calor.', 'Vamos a comer a las dos.',
            'Son las tres y cuarto.', 'No sé dónde dejé las gafas.', 'El tren llega con diez minutos de retraso.',
            'Por favor, cierra la puerta.', '¿Quieres un café con leche?',
            'Mañana tenemos una reunión importante.', 'La salida está al fondo del pasillo.',
            'El camión descarga en el muelle tres.', 'La máquina hace un ruido raro.',
            'Apaga la luz cuando termines.', 'Necesito otra hoja de papel.', 'El informe está casi terminado.',
            'Llámame cuando llegues.', '¿Has visto a mi hermano?', 'Esta tarde va a llover.',
            'El turno de noche empieza a las diez.', 'Revisa la presión de los neumáticos.',
            'La princesa vivía en un castillo.', 'Le puso sal a la sopa.',
        ),
        subjects=(
            'El técnico', 'Mi hermana', 'La profesora', 'Nuestro vecino', 'El conductor del camión',
            'La gente del barrio', 'Un amigo de Pedro', 'El médico', 'La abuela', 'Los niños', 'El jefe de turno',
            'Una mujer mayor',
        ),
        verbs=(
            'compró', 'encontró', 'preparó', 'buscaba', 'vendió', 'pintó', 'olvidó', 'arregló', 'trajo', 'miraba',
            'guardó', 'limpió',
        ),
        objects=(
            'una mesa nueva', 'el pan de la mañana', 'las llaves del coche', 'un libro de historia',
            'la radio vieja', 'dos sillas de madera', 'el mapa de la ciudad', 'una carta larga',
            'la bicicleta roja', 'un regalo pequeño', 'la caja de herramientas', 'el abrigo gris',
        ),
        complements=(
            'ayer por la tarde', 'en el mercado', 'antes de la cena', 'cerca del río', 'durante las vacaciones',
            'con mucha paciencia', 'sin decir nada', 'el lunes pasado', 'en la estación', 'junto a la ventana',
            'después del trabajo', 'a las ocho',
        ),
    ),
}

# Near-miss rules per split: endings put on the word's stem, and the share of the word kept as a prefix
# (with a suffix): disjoint between the splits by construction, and checked. The development set's are as
# near the commands as the evaluation's (a changed last vowel, a participle or gerund, half the word and a
# consonant): a detector calibrated on farther ones let the evaluation's nearest through. Training's are
# many inflections (persons, tenses, plural participles, the present participle): the forms of a command that
# people say in ordinary talk, which a head that never heard them scores as the command.
ENDINGS: dict[str, tuple[str, ...]] = {
    "train": ("amos", "aron", "aba", "o", "as", "ados", "adas", "ante", "aste", "emos", "ara", "aria"),
    "dev": ("i", "u", "ada", "iendo"),
    "eval": ("ado", "ando", "a", "e"),
}
PREFIX: dict[str, tuple[float, str]] = {"train": (0.6, ""), "dev": (0.5, "r"), "eval": (0.5, "s")}
MIN_WORD_LETTERS = 4  # shorter command words ("on", "la") get no near misses of their own


def _stem(word: str) -> str:
    if len(word) > 4 and word[-2:] in ("ar", "er", "ir"):
        return word[:-2]
    return word[:-1] if word[-1] in "aeiou" else word


def _rule_words(word: str, split: str) -> set[str]:
    share, tail = PREFIX[split]
    out = {_stem(word) + e for e in ENDINGS[split]}
    out.add(word[: max(3, math.ceil(share * len(word)))] + tail)
    return out


def near_misses(vocabulary: Vocabulary, split: str) -> list[str]:
    """The near-miss words of ``split`` for the commands of ``vocabulary`` (sorted; none contains a command)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    words = sorted(w for w in vocabulary.command_words() if len(w) >= MIN_WORD_LETTERS)
    taken: set[str] = set()
    per_split: dict[str, set[str]] = {}
    for s in ("eval", "dev", "train"):  # precedence: the evaluation keeps what two splits would share
        others = set().union(*(corpus_words(o) for o in SPLITS if o != s))
        found = {m for w in words for m in _rule_words(w, s)} - taken - others
        found = {m for m in found if not vocabulary.hits(m) and len(m) >= 3}
        per_split[s] = found
        taken |= found
    return sorted(per_split[split])


def sentence(rng: np.random.Generator, split: str) -> str:
    """One generated sentence or fixed phrase of the split's corpus."""
    c = CORPORA[split]
    if rng.random() < 0.6:
        return f"{rng.choice(c.subjects)} {rng.choice(c.verbs)} {rng.choice(c.objects)} {rng.choice(c.complements)}."
    return str(rng.choice(c.phrases))


def negative_text(rng: np.random.Generator, split: str, vocabulary: Vocabulary, n_sentences: int,
                  near_miss_share: float = 0.25) -> str:
    """Keyword-free talk: ``n_sentences`` sentences, about ``near_miss_share`` of them 1-3 near-miss words.

    Raises ValueError if a sentence holds a command word (the user's commands may be ordinary words): such
    sentences are skipped and drawn again, up to a limit.
    """
    misses = near_misses(vocabulary, split)
    parts: list[str] = []
    tries = 0
    while len(parts) < n_sentences:
        tries += 1
        if tries > 50 * n_sentences:
            raise ValueError(f"the {split} corpus keeps producing sentences with the commands "
                             f"{sorted(vocabulary.command_words())}; the commands are too common words")
        if misses and rng.random() < near_miss_share:
            chosen = rng.choice(misses, size=min(len(misses), int(rng.integers(1, 4))), replace=False)
            text = ". ".join(str(w).capitalize() for w in chosen) + "."
        else:
            text = sentence(rng, split)
        if not vocabulary.hits(text):
            parts.append(text)
    return " ".join(parts)


@functools.cache
def corpus_words(split: str) -> frozenset[str]:
    """Every folded word of a split's corpus (a near miss of another split must not be one of them)."""
    c = CORPORA[split]
    texts: Sequence[str] = (*c.phrases, *c.subjects, *c.verbs, *c.objects, *c.complements)
    return frozenset(w for t in texts for w in words_of(t))
