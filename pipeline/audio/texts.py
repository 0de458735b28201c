"""The development set's keyword-free texts (``pipeline.eval.holdout_tts --split dev``).

A third list, disjoint from the training texts (``pipeline.authoring.speech_negatives``) and from the evaluation
texts (``pipeline.eval.holdout_tts``), checked by tests: the detector is calibrated on sentences the model has
never heard (training texts would make the development negatives too easy and the threshold too low)
and the evaluation sentences stay unheard until evaluation. Same shape as the other two lists.
"""

from __future__ import annotations

# Near misses: share sounds with the commands, contain none of them.
NEAR_MISS_WORDS: tuple[str, ...] = (
    "salgo", "saldremos", "salsa", "saludo", "salvavidas", "repito", "repetiste", "repetitivo", "cancelaste",
    "candelabro", "cancelable", "principesco", "príncipes", "continuidad", "continental", "contenedor",
    "levantaste", "levantamiento", "levantarse", "elevador", "acoplaste", "acopiar", "copiloto", "aplicado",
    "solapar", "pelotas", "principito",
)
PHRASES: tuple[str, ...] = (
    "Che, ¿me alcanzás el mate?", "El colectivo viene lleno a esta hora.", "Salgo en cinco minutos.",
    "Repito la pregunta por si no la oíste.", "Cancelaste la reserva del restaurante.",
    "El principito es un libro muy lindo.", "La continuidad del proyecto está asegurada.",
    "Te levantaste temprano ayer, ¿no?", "El elevador de carga está trabado.", "El copiloto revisó el mapa.",
    "Mañana hay partido en el estadio del club.", "Dejé la bicicleta atada al poste.",
    "La heladera hace un ruido extraño.", "El depósito cierra a las seis.", "Pasame la llave inglesa, por favor.",
    "La batería del taladro está descargada.", "Hoy llueve en toda la provincia.",
    "El gerente firmó los papeles.", "Anotá el número de pedido.", "La cinta transportadora se detuvo.",
    "Tenemos inventario el jueves.", "La luz del pasillo parpadea.", "Subí el volumen de la radio.",
    "El camión de reparto ya llegó.", "¿Cuántas cajas quedan en el estante?",
)
SUBJECTS: tuple[str, ...] = (
    "El operario", "Mi cuñada", "El encargado del depósito", "La señora de la limpieza", "Mi sobrino",
    "El chofer", "La contadora", "Un cliente nuevo", "El mecánico", "La recepcionista",
)
VERBS: tuple[str, ...] = ("ordenó", "revisó", "cargó", "descargó", "contó", "midió", "pesó", "etiquetó", "envolvió",
                          "apiló")
OBJECTS: tuple[str, ...] = (
    "los repuestos del motor", "una pila de cajas", "el pedido de la semana", "las herramientas del taller",
    "los bidones de aceite", "el rollo de cable", "las facturas viejas", "una bolsa de tornillos",
    "el carro de compras", "los paquetes del correo",
)
COMPLEMENTS: tuple[str, ...] = (
    "a la madrugada", "en el galpón", "antes del mediodía", "junto al portón", "durante la tormenta",
    "con mucho cuidado", "el domingo", "en la terraza", "a las apuradas", "bajo la escalera",
)
