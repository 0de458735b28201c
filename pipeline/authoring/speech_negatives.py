"""Speech negatives for FONDO: keyword-free Spanish words, phrases and near-miss words, TRAINING voices only.

A model that has only heard noise as FONDO calls any speech a command (hundreds of false accepts per
hour on ordinary talk). This writes files of continuous keyword-free speech into a FONDO folder so the
background class also covers talk: generated sentences, fixed phrases and near-miss words ("salimos",
"repetimos", "cancelaron", "principios", ...) spoken by espeak-ng at a few speeds and pitches, each
utterance by the next of the training-side voices (``--voices``; default: the demo seeds' voice
``pipeline.audio.tts.TRAIN_VOICE`` and the sixteen ``pipeline.audio.tts.TRAINING_VOICES``, so FONDO holds
talk by many speakers, not only the one who recorded the commands). The pauses between utterances are
short (``PAUSE_S``), so every 1 s FONDO clip the dataset stage cuts from these files holds speech.

Leak rules (checked by tests): the text lists here are disjoint from ``pipeline.eval.holdout_tts``'s
evaluation texts, and no voice shares a speaker with its evaluation voices.

Inputs -> outputs: espeak-ng -> ``<out>/speech_neg_NNN.wav`` (16 kHz mono PCM_16, each written
atomically; other files in ``<out>`` are left alone). Deterministic for a given ``--seed`` and
espeak-ng version.

Example (add speech negatives to your own seeds)::

    python -m pipeline.authoring.speech_negatives --out my-seeds/FONDO --minutes 2
"""

from __future__ import annotations

import argparse
import logging
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.audio import tts
from pipeline.audio.wav import write_wav
from pipeline.core.cli import die, run_main, setup_logging

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FILE_PREFIX = "speech_neg_"
# Training-voice renditions: espeak-ng -s (words/min) and -p (0-99) values drawn per utterance.
SPEEDS_WPM: tuple[int, ...] = (135, 160, 185)
PITCHES: tuple[int, ...] = (35, 50, 65)
PAUSE_S = (0.05, 0.25)  # pause between utterances, uniform range (short: every 1 s window holds speech)
PEAK = 0.5  # peak level of each file
ROOM_FLOOR_DBFS = -60.0  # faint pink floor (no digital silence)
MASTER_SEED = 4242

# Near misses: share sounds with the commands but are other words (none contains a command word,
# none is in pipeline.eval.holdout_tts.NEAR_MISS_WORDS).
NEAR_MISS_WORDS: tuple[str, ...] = (
    "salimos", "salió", "salieron", "salón", "salario", "saltar", "repetimos", "repitió", "repetía", "repetidor",
    "cancelamos", "canceló", "cancelé", "cancha", "canela", "principios", "príncipe", "principado",
    "continuamos", "continuaba", "continente", "contenido", "levantaron", "levantó", "levante", "elevado",
    "acoplamos", "acopló", "acoplamiento", "copiar", "acopio", "aplicar",
)
PHRASES: tuple[str, ...] = (
    "Buenos días a todos.", "¿Dónde está la estación de autobuses?", "Ayer salimos tarde del trabajo.",
    "Repetimos la prueba por la tarde.", "Cancelé la cita con el médico.", "Los principios son importantes.",
    "Continuamos después de comer.", "Se levantaron muy temprano.", "Acoplamos las dos piezas ayer.",
    "El príncipe llegó en barco.", "Tengo que llamar al dentista.", "La sopa está demasiado caliente.",
    "¿Me pasas la sal, por favor?", "El perro duerme en el sofá.", "Hay mucho tráfico en la autopista.",
    "Compramos fruta en la tienda de la esquina.", "La impresora no tiene papel.", "Abre la ventana un momento.",
    "El ascensor está averiado otra vez.", "¿A qué hora cierra la farmacia?", "Mi coche es de color azul.",
    "Los viernes comemos pescado.", "El examen fue bastante difícil.", "Hace frío en la montaña.",
    "Guarda los documentos en el cajón.", "Esta semana trabajo por la noche.", "El paquete llegó roto.",
    "Vamos a pintar la cocina de blanco.", "No encuentro el cargador del móvil.", "La música está muy alta.",
    "El contenido del correo era urgente.", "Salió el sol después de la tormenta.",
)
SUBJECTS: tuple[str, ...] = (
    "Mi primo", "La vecina del tercero", "El electricista", "Nuestra profesora de inglés", "El panadero",
    "Mis padres", "La enfermera", "Un compañero de clase", "El portero", "La directora",
)
VERBS: tuple[str, ...] = ("llevó", "recogió", "dejó", "probó", "pidió", "subió", "perdió", "cambió", "movió", "abrió")
OBJECTS: tuple[str, ...] = (
    "el paraguas negro", "una bolsa de naranjas", "la escalera larga", "el ordenador portátil", "tres botellas de agua",
    "la maleta azul", "un cuaderno viejo", "las cortinas del salón", "el cable de la lámpara", "una caja de galletas",
)
COMPLEMENTS: tuple[str, ...] = (
    "esta mañana", "en el garaje", "antes del almuerzo", "al lado de la puerta", "por la noche",
    "sin ayuda", "el martes", "en la oficina", "con prisa", "detrás del armario",
)
KEYWORDS: tuple[str, ...] = ("ACOPLAR", "CANCELAR", "CONTINUAR", "LEVANTADO", "PRINCIPAL", "REPETIR", "SALIR")


def fold(text: str) -> str:
    """Lower case without accents."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def words_of(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in fold(text)).split()


def keyword_hits(text: str, keywords: Sequence[str] = KEYWORDS) -> list[str]:
    """Words of ``text`` that contain a command word (so 'salir' and 'salirse' both count)."""
    keys = [fold(k) for k in keywords]
    return [w for w in words_of(text) if any(k in w for k in keys)]


def utterance(rng: np.random.Generator) -> str:
    """One keyword-free utterance: a generated sentence, a fixed phrase or 1-3 near-miss words."""
    r = rng.random()
    if r < 0.4:
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(COMPLEMENTS)}."
    elif r < 0.7:
        text = str(rng.choice(PHRASES))
    else:
        words = rng.choice(NEAR_MISS_WORDS, size=int(rng.integers(1, 4)), replace=False)
        text = ". ".join(str(w).capitalize() for w in words) + "."
    hits = keyword_hits(text)
    if hits:
        raise AssertionError(f"speech negative {text!r} contains command words {hits}: fix the lists in speech_negatives")
    return text


def speak(text: str, voice: str, speed_wpm: int, pitch: int, espeak: str) -> np.ndarray:
    """espeak-ng speech as float32 mono at 16 kHz, leading/trailing silence trimmed."""
    return trim_silence(tts.speak(text, voice, speed_wpm, pitch, espeak))


def trim_silence(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing samples below ``threshold`` (espeak-ng pads with digital silence)."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    return x[loud[0]: loud[-1] + 1] if loud.size else x[:0]


def speech_file(index: int, seconds: float, voices: Sequence[str], espeak: str,
                seed: int) -> tuple[np.ndarray, list[str]]:
    """About ``seconds`` of utterances separated by short pauses, utterance ``j`` by ``voices[j % len]``
    (starting at ``index``); returns the audio and the texts."""
    from pipeline.audio.augment import coloured_noise

    rng = np.random.default_rng([seed, 0, index])
    parts: list[np.ndarray] = []
    texts: list[str] = []
    n = 0
    while n < seconds * SAMPLE_RATE:
        text = utterance(rng)
        speed, pitch = int(rng.choice(SPEEDS_WPM)), int(rng.choice(PITCHES))
        speech = speak(text, voices[(index + len(texts)) % len(voices)], speed, pitch, espeak)
        speech = speech * np.float32(PEAK / max(float(np.max(np.abs(speech))), 1e-9))
        pause = np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), dtype=np.float32)
        parts += [speech, pause]
        texts.append(text)
        n += speech.size + pause.size
    audio = np.concatenate(parts)
    floor = coloured_noise(audio.size, "pink", seed * 1000 + index) * np.float32(10 ** (ROOM_FLOOR_DBFS / 20))
    return (audio + floor).astype(np.float32), texts


# every speaker training may hear: the command voice and pipeline.audio.tts.TRAINING_VOICES
default_voices = tts.training_voices


def check_voices(voices: Sequence[str]) -> None:
    """die() unless every voice is a training-side voice (an evaluation speaker here would leak)."""
    allowed = {tts.speaker(v) for v in default_voices()}
    bad = [v for v in voices if tts.speaker(v) not in allowed]
    if bad:
        die(f"--voices {','.join(bad)}: not training-side voices; choose from {','.join(default_voices())} "
            "(pipeline/audio/tts.py TRAINING_VOICES; evaluation voices must stay unheard)")


def write_negatives(out: Path, minutes: float, file_s: float, seed: int = MASTER_SEED,
                    voices: Sequence[str] | None = None) -> list[Path]:
    """Write ``speech_neg_NNN.wav`` files totalling about ``minutes`` into ``out``; returns their paths."""
    voices = list(voices or default_voices())
    check_voices(voices)
    espeak = tts.espeak_binary()
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    total, k = 0.0, 0
    while total < minutes * 60.0:
        audio, texts = speech_file(k, min(file_s, minutes * 60.0 - total), voices, espeak, seed)
        path = out / f"{FILE_PREFIX}{k:03d}.wav"
        write_wav(path, audio, SAMPLE_RATE)
        log.info("%s: %.1f s, %d utterances", path, audio.size / SAMPLE_RATE, len(texts))
        paths.append(path)
        total += audio.size / SAMPLE_RATE
        k += 1
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="FONDO folder to add the files to (e.g. SEEDS/FONDO)")
    p.add_argument("--minutes", type=float, default=1.0, help="total speech to write, minutes")
    p.add_argument("--file-s", type=float, default=15.0, help="length of each file, seconds")
    p.add_argument("--seed", type=int, default=MASTER_SEED, help="master seed (same seed => same files)")
    p.add_argument("--voices", help="comma-separated espeak-ng voices, each a training-side voice "
                                    "(default: pipeline.audio.tts.TRAIN_VOICE and pipeline.audio.tts.TRAINING_VOICES)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if args.minutes <= 0 or args.file_s < 1.0:
        die(f"--minutes {args.minutes} / --file-s {args.file_s}: need minutes > 0 and file-s >= 1")
    if args.out.exists() and not args.out.is_dir():
        die(f"{args.out}: exists and is not a folder; pass the FONDO folder of your seeds")
    voices = [v.strip() for v in args.voices.split(",") if v.strip()] if args.voices else default_voices()
    paths = write_negatives(args.out, args.minutes, args.file_s, args.seed, voices)
    print(f"speech negatives: {len(paths)} files in {args.out}/ ({args.minutes:g} min, "
          f"{len(voices)} training-side voice(s), no evaluation speaker)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
