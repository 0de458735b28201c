"""A cross-speaker held-out set the project builds itself, with espeak-ng voices training never uses.

Keyword folders (ACOPLAR … SALIR): each command spoken by every EVALUATION voice (an explicit list of
espeak-ng Spanish language+variant pairs whose speakers are neither training-side speakers,
``pipeline.audio.tts.TRAIN_VOICE`` and ``pipeline.audio.tts.TRAINING_VOICES``, nor development speakers) at several speeds and pitches, ~1.5 s per file with silence around the word.
``FONDO``: keyword-free Spanish speech (generated sentences, conversational phrases and near-miss words
such as "salí", "repetido", "cancelado", "principio") by the same evaluation voices, in files of about
``--fondo-file-s`` seconds totalling ``--fondo-minutes``, for false accepts per hour.
A fraction of the files (``--noisy-fraction``) is mixed with synthetic white/pink/brown noise at an SNR
from ``--snr-db-list``; every file gets a faint pink room floor (-65 to -50 dBFS) instead of digital
silence. ``manifest.json`` records voice, variant, speed, pitch, SNR, text and sha256 per file.
Everything is 16 kHz mono 16-bit PCM and deterministic for a given ``--seed``.

Inputs -> outputs: espeak-ng -> ``<out>/<CLASS>/*.wav`` + ``<out>/manifest.json`` (written last).

``--split dev`` builds the development set instead: ``DEV_VOICES`` and ``pipeline.audio.texts``, for
choosing the detector (``pipeline.eval.detector_calib``) without touching the evaluation set.

Example::

    python -m pipeline.eval.holdout_tts --out build/holdout-tts --fondo-minutes 60
    python -m pipeline.eval.holdout_tts --split dev --out build/holdout-dev
"""

from __future__ import annotations

import argparse
import logging
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.tts import check_voice_split, espeak_binary, espeak_version, speak, training_voices
from pipeline.audio.wav import wav_bytes
from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_dir, atomic_write_json, sha256_bytes

log = logging.getLogger(__name__)

STAGE = "holdout_tts"
SAMPLE_RATE = 16000
KEYWORDS: tuple[str, ...] = ("ACOPLAR", "CANCELAR", "CONTINUAR", "LEVANTADO", "PRINCIPAL", "REPETIR", "SALIR")
BACKGROUND_CLASS = "FONDO"

# The EVALUATION voices: espeak-ng (language, variant). Training must never use any of them;
# check_splits() asserts that no speaker (espeak-ng variant) is shared with the training side or DEV_VOICES.
EVAL_VOICES: tuple[tuple[str, str], ...] = (
    ("es", "f2"), ("es", "f4"), ("es", "m2"), ("es", "m3"), ("es", "m5"), ("es", "Andrea"),
    ("es-419", "f1"), ("es-419", "f3"), ("es-419", "f5"), ("es-419", "m4"), ("es-419", "m6"), ("es-419", "m7"),
)
# The DEVELOPMENT voices: a third set of speakers, neither training nor evaluation, for choosing and
# calibrating the detector (``--split dev``) without looking at the evaluation set. Its keyword-free
# files use a third text list (pipeline.audio.texts), neither training nor evaluation texts.
DEV_VOICES: tuple[tuple[str, str], ...] = (
    ("es", "grandpa"), ("es-419", "norbert"), ("es", "shelby"), ("es-419", "victor"), ("es", "Marco"),
    ("es-419", "quincy"),
)
SPLITS: dict[str, tuple[tuple[str, str], ...]] = {"eval": EVAL_VOICES, "dev": DEV_VOICES}
DEFAULT_SEEDS: dict[str, int] = {"eval": 6, "dev": 7}
SPEEDS_WPM: tuple[int, ...] = (120, 145, 170, 195)       # espeak-ng -s (default 175)
PITCHES: tuple[int, ...] = (25, 40, 55, 70)               # espeak-ng -p, 0..99 (default 50)
NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown")
ROOM_FLOOR_DBFS = (-65.0, -50.0)  # RMS of the pink room-noise floor under every file, uniform range
CLIP_S = 1.5            # keyword files: at least this long, word placed with silence around it
LEAD_S = (0.15, 0.45)   # silence before the word, uniform range

# Keyword-free material. Near misses share sounds with the commands but are other words.
NEAR_MISS_WORDS: tuple[str, ...] = (
    "salí", "salida", "saliendo", "sale", "salero", "repetido", "repetición", "repite", "cancelado",
    "cancelación", "cancela", "principio", "principiante", "princesa", "continúa", "continuo", "continuación",
    "levanta", "levantamos", "acoplado", "acople", "copla", "pileta", "cansado", "levadura",
)
PHRASES: tuple[str, ...] = (
    "Ayer salí temprano de casa.", "El mensaje fue repetido dos veces.", "El vuelo fue cancelado por la niebla.",
    "Al principio no entendía nada.", "Es un principiante con mucha suerte.", "La reunión continúa mañana.",
    "Levanta la caja con cuidado.", "La pieza ya está acoplada.", "¿Qué hora es?", "Hoy hace mucho calor.",
    "Vamos a comer a las dos.", "Son las tres y cuarto.", "No sé dónde dejé las gafas.",
    "El tren llega con diez minutos de retraso.", "Por favor, cierra la puerta.", "¿Quieres un café con leche?",
    "Mañana tenemos una reunión importante.", "La salida está al fondo del pasillo.",
    "El camión descarga en el muelle tres.", "La máquina hace un ruido raro.",
    "Apaga la luz cuando termines.", "Necesito otra hoja de papel.", "El informe está casi terminado.",
    "Llámame cuando llegues.", "¿Has visto a mi hermano?", "Esta tarde va a llover.",
    "El turno de noche empieza a las diez.", "Revisa la presión de los neumáticos.",
    "La princesa vivía en un castillo.", "Le puso sal a la sopa.",
)
SUBJECTS: tuple[str, ...] = (
    "El técnico", "Mi hermana", "La profesora", "Nuestro vecino", "El conductor del camión", "La gente del barrio",
    "Un amigo de Pedro", "El médico", "La abuela", "Los niños", "El jefe de turno", "Una mujer mayor",
)
VERBS: tuple[str, ...] = (
    "compró", "encontró", "preparó", "buscaba", "vendió", "pintó", "olvidó", "arregló", "trajo", "miraba",
    "guardó", "limpió",
)
OBJECTS: tuple[str, ...] = (
    "una mesa nueva", "el pan de la mañana", "las llaves del coche", "un libro de historia", "la radio vieja",
    "dos sillas de madera", "el mapa de la ciudad", "una carta larga", "la bicicleta roja", "un regalo pequeño",
    "la caja de herramientas", "el abrigo gris",
)
COMPLEMENTS: tuple[str, ...] = (
    "ayer por la tarde", "en el mercado", "antes de la cena", "cerca del río", "durante las vacaciones",
    "con mucha paciencia", "sin decir nada", "el lunes pasado", "en la estación", "junto a la ventana",
    "después del trabajo", "a las ocho",
)


def voice_id(language: str, variant: str) -> str:
    """The espeak-ng ``-v`` argument (``es+f2``)."""
    return f"{language}+{variant}" if variant else language


def normalise_voice(voice: str) -> str:
    """Compare voices case-insensitively; a bare language means its default variant."""
    return voice.strip().lower()


def check_splits() -> None:
    """Training, development and evaluation speakers are three disjoint sets (ValueError otherwise)."""
    train = training_voices()
    ev, dev = [voice_id(*v) for v in EVAL_VOICES], [voice_id(*v) for v in DEV_VOICES]
    check_voice_split(ev, train)
    check_voice_split(dev, train)
    check_voice_split(ev, dev)


def fold(text: str) -> str:
    """Lower case without accents (so 'salí' and 'sali' compare equal)."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def keyword_tokens(text: str) -> list[str]:
    """Any command word in ``text`` (whole words, case and accents ignored)."""
    words = "".join(c if c.isalnum() else " " for c in fold(text)).split()
    keys = {fold(k) for k in KEYWORDS}
    return [w for w in words if w in keys]


def make_rng(seed: int, class_index: int, item_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, item_index])


def negative_text(rng: np.random.Generator, n_sentences: int, split: str = "eval") -> str:
    """Keyword-free Spanish: generated sentences, fixed phrases and near-miss words, in random order
    (the evaluation texts here; for the dev split, pipeline.audio.texts: a third list, neither training nor evaluation)."""
    import pipeline.audio.texts as dev

    texts = dev if split == "dev" else sys.modules[__name__]
    parts: list[str] = []
    for _ in range(n_sentences):
        r = rng.random()
        if r < 0.5:
            parts.append(f"{rng.choice(texts.SUBJECTS)} {rng.choice(texts.VERBS)} {rng.choice(texts.OBJECTS)} "
                         f"{rng.choice(texts.COMPLEMENTS)}.")
        elif r < 0.8:
            parts.append(str(rng.choice(texts.PHRASES)))
        else:
            words = rng.choice(texts.NEAR_MISS_WORDS, size=int(rng.integers(1, 4)), replace=False)
            parts.append(". ".join(str(w).capitalize() for w in words) + ".")
    text = " ".join(parts)
    found = keyword_tokens(text)
    if found:
        raise AssertionError(f"negative text contains command words {found}: fix the word lists in holdout_tts")
    return text


# ---- audio -------------------------------------------------------------------------------------------

def colored_noise(kind: str, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f² power) noise."""
    white = rng.standard_normal(n_samples)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n_samples, 1.0 / SAMPLE_RATE)
        f[0] = f[1] if n_samples > 1 else 1.0
        spec = spec / (np.sqrt(f) if kind == "pink" else f)
        spec[0] = 0.0
        x = np.fft.irfft(spec, n_samples)
    rms = float(np.sqrt(np.mean(x ** 2))) or 1.0
    return (x / rms).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, speech_power: float) -> np.ndarray:
    """speech + noise scaled so that speech_power / noise_power = snr_db (unit-RMS noise in)."""
    noise_rms = np.sqrt(speech_power / (10.0 ** (snr_db / 10.0)))
    return speech + noise_rms * noise


def finish(audio: np.ndarray, rng: np.random.Generator, speech_power: float, noisy_fraction: float,
           snr_db_list: Sequence[float]) -> tuple[np.ndarray, dict[str, Any]]:
    """Optional noise at an SNR, then a random peak level; returns the audio and what was drawn."""
    info: dict[str, Any] = {"snr_db": None, "noise": None}
    if snr_db_list and rng.random() < noisy_fraction:
        snr = float(rng.choice(np.asarray(snr_db_list, dtype=np.float64)))
        kind = str(rng.choice(NOISE_KINDS))
        audio = mix_at_snr(audio, colored_noise(kind, len(audio), rng), snr, speech_power)
        info.update(snr_db=snr, noise=kind)
    peak_dbfs = float(rng.uniform(-12.0, -3.0))
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = audio * (10.0 ** (peak_dbfs / 20.0) / peak)
    # A microphone never records digital silence: every file gets a faint pink room floor, so that
    # "clean" means no added noise, not the all-zero pauses espeak-ng produces.
    floor_dbfs = float(rng.uniform(*ROOM_FLOOR_DBFS))
    audio = audio + 10.0 ** (floor_dbfs / 20.0) * colored_noise("pink", len(audio), rng)
    info.update(peak_dbfs=round(peak_dbfs, 3), room_floor_dbfs=round(floor_dbfs, 3))
    return audio.astype(np.float32), info


def active_power(speech: np.ndarray) -> float:
    """Mean power over the samples of frames within 30 dB of the loudest 25 ms frame (the speech itself)."""
    n = 400
    frames = speech[: len(speech) // n * n].reshape(-1, n) if len(speech) >= n else speech[None, :]
    p = np.mean(frames.astype(np.float64) ** 2, axis=1)
    keep = p >= p.max() * 1e-3
    return float(np.mean(p[keep])) if p.max() > 0 else 0.0


# ---- the set -----------------------------------------------------------------------------------------

def keyword_item(word: str, class_index: int, item_index: int, voice: tuple[str, str], seed: int,
                 noisy_fraction: float, snr_db_list: Sequence[float], espeak: str) -> tuple[np.ndarray, dict[str, Any]]:
    rng = make_rng(seed, class_index, item_index)
    speed, pitch = int(rng.choice(SPEEDS_WPM)), int(rng.choice(PITCHES))
    vid = voice_id(*voice)
    speech = speak(word.lower(), vid, speed, pitch, espeak)
    power = active_power(speech)
    if power <= 0:
        die(f"espeak-ng -v {vid}: produced silence for {word!r}; choose another evaluation voice")
    lead = int(rng.uniform(*LEAD_S) * SAMPLE_RATE)
    total = max(int(CLIP_S * SAMPLE_RATE), lead + len(speech) + int(0.2 * SAMPLE_RATE))
    audio = np.zeros(total, dtype=np.float32)
    audio[lead: lead + len(speech)] = speech
    audio, drawn = finish(audio, rng, power, noisy_fraction, snr_db_list)
    meta = {"voice": vid, "language": voice[0], "variant": voice[1], "speed_wpm": speed, "pitch": pitch,
            "text": word.lower(), "word_start_s": round(lead / SAMPLE_RATE, 4),
            "word_end_s": round((lead + len(speech)) / SAMPLE_RATE, 4), **drawn}
    return audio, meta


def fondo_item(item_index: int, voice: tuple[str, str], seed: int, file_s: float, noisy_fraction: float,
               snr_db_list: Sequence[float], espeak: str, split: str = "eval") -> tuple[np.ndarray, dict[str, Any]]:
    rng = make_rng(seed, len(KEYWORDS), item_index)
    speed, pitch = int(rng.choice(SPEEDS_WPM)), int(rng.choice(PITCHES))
    vid = voice_id(*voice)
    # about 2.5 s per sentence; speak more until the file is long enough
    chunks: list[np.ndarray] = []
    texts: list[str] = []
    got = 0
    while got < file_s * SAMPLE_RATE:
        text = negative_text(rng, max(1, int(np.ceil((file_s - got / SAMPLE_RATE) / 2.5))), split)
        speech = speak(text, vid, speed, pitch, espeak)
        gap = np.zeros(int(rng.uniform(0.2, 1.0) * SAMPLE_RATE), dtype=np.float32)
        chunks += [gap, speech]
        texts.append(text)
        got += len(gap) + len(speech)
    audio = np.concatenate(chunks + [np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)])
    power = active_power(audio)
    audio, drawn = finish(audio, rng, power, noisy_fraction, snr_db_list)
    meta = {"voice": vid, "language": voice[0], "variant": voice[1], "speed_wpm": speed, "pitch": pitch,
            "text": " ".join(texts), **drawn}
    return audio, meta


def parse_voices(text: str | None, split: str = "eval") -> list[tuple[str, str]]:
    """``es+f2,es-419+m4`` -> pairs; each must be in the split's list (no ad-hoc voices: the split stays explicit)."""
    allowed = SPLITS[split]
    if not text:
        return list(allowed)
    known = {normalise_voice(voice_id(*v)): v for v in allowed}
    out = []
    for v in (s for s in text.split(",") if s.strip()):
        if normalise_voice(v) not in known:
            what = {"eval": "an evaluation", "dev": "a development"}[split]
            die(f"--voices {v!r}: not {what} voice; choose from {[voice_id(*x) for x in allowed]}")
        out.append(known[normalise_voice(v)])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser("Build the espeak-ng cross-speaker held-out set.", STAGE)
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole)")
    p.add_argument("--split", choices=sorted(SPLITS), default="eval",
                   help="eval: the evaluation voices and texts; dev: the development voices (detector choice "
                        "and calibration) with training texts")
    p.add_argument("--seed", type=int, help=f"master seed (same seed => same files; default {DEFAULT_SEEDS})")
    p.add_argument("--voices", help="comma-separated subset of the evaluation voices (default: all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_stage_args(build_parser(), argv, STAGE)
    setup_logging(args.verbose)
    from pipeline.core.provenance import manifest

    seed = DEFAULT_SEEDS[args.split] if args.seed is None else args.seed
    voices = parse_voices(args.voices, args.split)
    train_voices = training_voices()
    try:
        check_splits()
    except ValueError as e:
        die(f"pipeline/eval/holdout_tts.py: {e}")
    espeak = espeak_binary()

    files: list[dict[str, Any]] = []
    with atomic_dir(args.out) as tmp:
        for ci, word in enumerate(KEYWORDS):
            (tmp / word).mkdir()
            k = 0
            for voice in voices:
                for _ in range(args.renditions):
                    audio, meta = keyword_item(word, ci, k, voice, seed, args.noisy_fraction,
                                               args.snr_db_list, espeak)
                    rel = f"{word}/{word.lower()}_{k:04d}.wav"
                    files.append(_write(tmp, rel, word, audio, meta))
                    k += 1
            log.info("%s: %d files", word, k)
        (tmp / BACKGROUND_CLASS).mkdir()
        fondo_s, k = 0.0, 0
        while fondo_s < args.fondo_minutes * 60.0:
            audio, meta = fondo_item(k, voices[k % len(voices)], seed, args.fondo_file_s,
                                     args.noisy_fraction, args.snr_db_list, espeak, args.split)
            rel = f"{BACKGROUND_CLASS}/fondo_{k:04d}.wav"
            files.append(_write(tmp, rel, BACKGROUND_CLASS, audio, meta))
            fondo_s += len(audio) / SAMPLE_RATE
            k += 1
        log.info("%s: %d files, %.1f min", BACKGROUND_CLASS, k, fondo_s / 60)
        counts = {c: sum(f["class"] == c for f in files) for c in (*KEYWORDS, BACKGROUND_CLASS)}
        doc = manifest(STAGE, params={
            "split": args.split, "seed": seed, "renditions": args.renditions, "fondo_minutes": args.fondo_minutes,
            "fondo_file_s": args.fondo_file_s, "noisy_fraction": args.noisy_fraction,
            "snr_db_list": list(args.snr_db_list), "speeds_wpm": list(SPEEDS_WPM), "pitches": list(PITCHES),
        }, extra={
            "kind": "holdout", "generator": espeak_version(espeak),
            "classes": sorted((*KEYWORDS, BACKGROUND_CLASS)), "background_class": BACKGROUND_CLASS,
            "eval_voices": [voice_id(*v) for v in voices], "training_voices_excluded": train_voices,
            "counts": counts, "fondo_s": round(fondo_s, 3), "files": files,
        })
        atomic_write_json(tmp / "manifest.json", doc)
    print(f"{args.out}: {sum(counts[c] for c in KEYWORDS)} keyword files ({len(voices)} voices), "
          f"{counts[BACKGROUND_CLASS]} FONDO files = {fondo_s / 60:.1f} min of keyword-free speech")
    return 0


def _write(root: Path, rel: str, cls: str, audio: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    data = wav_bytes(audio, SAMPLE_RATE)
    (root / rel).write_bytes(data)
    return {"path": rel, "class": cls, "duration_s": round(len(audio) / SAMPLE_RATE, 4),
            "sha256": sha256_bytes(data), **meta}


if __name__ == "__main__":
    raise SystemExit(run_main(main))
