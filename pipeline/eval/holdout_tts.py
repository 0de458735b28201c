"""The espeak-ng development and evaluation sets: the user's commands by speakers training never hears.

Keyword folders (one per command of ``--vocabulary``, the seeds' commands): each command spoken by every
voice of the split (``pipeline.audio.tts.EVAL_VOICES`` or ``DEV_VOICES``; no speaker, i.e. espeak-ng
variant, is shared with the training side or the other split) at several speeds and pitches, ~1.5 s per file
with silence around the word. ``FONDO``: keyword-free talk of the split's corpus with near-miss words derived
from the commands (``pipeline.audio.texts``), by the same voices, in files of about ``fondo_file_s`` seconds
totalling ``fondo_minutes`` (``dev_fondo_minutes`` for the development set: twice as long by default, so that the
detector's target of 0.5 false accepts per hour is one it can count), for false accepts per hour. A fraction of
the files (``noisy_fraction``) is mixed with synthetic white/pink/brown noise at an SNR from ``snr_db_list``;
every file gets a faint pink room floor (-65 to -50 dBFS) instead of digital silence. ``manifest.json`` records
voice, speed, pitch, SNR, text and sha256 per file. Everything is 16 kHz mono 16-bit PCM and deterministic for a
given ``--seed``.

Inputs -> outputs: the vocabulary (``pipeline.core.vocabulary``) and espeak-ng -> ``<out>/<CLASS>/*.wav`` +
``<out>/manifest.json`` (written last).

``--split eval`` (default) builds the evaluation set, ``--split dev`` the development set the detector is
chosen and calibrated on (``pipeline.eval.detector_calib``) without touching the evaluation set.

Example::

    python -m pipeline.eval.holdout_tts --vocabulary build/stamps/vocabulary.json --out build/holdout-tts
    python -m pipeline.eval.holdout_tts --seeds data/demo-seeds --split dev --out build/holdout-dev
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.texts import near_misses, negative_text
from pipeline.audio.tts import check_splits, espeak_binary, espeak_version, speak, split_voices, training_voices
from pipeline.audio.wav import wav_bytes
from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_dir, atomic_write_json, sha256_bytes
from pipeline.core.vocabulary import BACKGROUND_CLASS, Vocabulary, VocabularyError, read_vocabulary
from pipeline.core.workers import thread_pool

log = logging.getLogger(__name__)

STAGE = "holdout_tts"
SAMPLE_RATE = 16000
DEFAULT_SEEDS: dict[str, int] = {"eval": 6, "dev": 7}
SPEEDS_WPM: tuple[int, ...] = (120, 145, 170, 195)       # espeak-ng -s (default 175)
PITCHES: tuple[int, ...] = (25, 40, 55, 70)               # espeak-ng -p, 0..99 (default 50)
NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown")
ROOM_FLOOR_DBFS = (-65.0, -50.0)  # RMS of the pink room-noise floor under every file, uniform range
CLIP_S = 1.5            # keyword files: at least this long, word placed with silence around it
LEAD_S = (0.15, 0.45)   # silence before the word, uniform range


def make_rng(seed: int, class_index: int, item_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, item_index])


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

def keyword_item(text: str, class_index: int, item_index: int, vid: str, seed: int,
                 noisy_fraction: float, snr_db_list: Sequence[float], espeak: str) -> tuple[np.ndarray, dict[str, Any]]:
    rng = make_rng(seed, class_index, item_index)
    speed, pitch = int(rng.choice(SPEEDS_WPM)), int(rng.choice(PITCHES))
    speech = speak(text, vid, speed, pitch, espeak)
    power = active_power(speech)
    if power <= 0:
        die(f"espeak-ng -v {vid}: produced silence for {text!r}; check the language in words.toml")
    lead = int(rng.uniform(*LEAD_S) * SAMPLE_RATE)
    total = max(int(CLIP_S * SAMPLE_RATE), lead + len(speech) + int(0.2 * SAMPLE_RATE))
    audio = np.zeros(total, dtype=np.float32)
    audio[lead: lead + len(speech)] = speech
    audio, drawn = finish(audio, rng, power, noisy_fraction, snr_db_list)
    meta = {"voice": vid, "speed_wpm": speed, "pitch": pitch, "text": text, "word_start_s": round(lead / SAMPLE_RATE, 4),
            "word_end_s": round((lead + len(speech)) / SAMPLE_RATE, 4), **drawn}
    return audio, meta


def fondo_item(item_index: int, vid: str, seed: int, file_s: float, noisy_fraction: float,
               snr_db_list: Sequence[float], espeak: str, split: str, vocabulary: Vocabulary) -> tuple[np.ndarray, dict[str, Any]]:
    rng = make_rng(seed, len(vocabulary.commands), item_index)
    speed, pitch = int(rng.choice(SPEEDS_WPM)), int(rng.choice(PITCHES))
    # about 2.5 s per sentence; speak more until the file is long enough
    chunks: list[np.ndarray] = []
    texts: list[str] = []
    got = 0
    while got < file_s * SAMPLE_RATE:
        text = negative_text(rng, split, vocabulary, max(1, int(np.ceil((file_s - got / SAMPLE_RATE) / 2.5))))
        speech = speak(text, vid, speed, pitch, espeak)
        gap = np.zeros(int(rng.uniform(0.2, 1.0) * SAMPLE_RATE), dtype=np.float32)
        chunks += [gap, speech]
        texts.append(text)
        got += len(gap) + len(speech)
    audio = np.concatenate(chunks + [np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)])
    power = active_power(audio)
    audio, drawn = finish(audio, rng, power, noisy_fraction, snr_db_list)
    meta = {"voice": vid, "speed_wpm": speed, "pitch": pitch, "text": " ".join(texts), **drawn}
    return audio, meta


def parse_voices(text: str | None, split: str, language: str) -> list[str]:
    """``es+f2,es-419+m4`` -> voices; each must be one of the split's (no ad-hoc voices: the split stays explicit)."""
    allowed = split_voices(split, language)
    if not text:
        return allowed
    known = {v.lower(): v for v in allowed}
    out = []
    for v in (s.strip() for s in text.split(",") if s.strip()):
        if v.lower() not in known:
            what = {"eval": "an evaluation", "dev": "a development"}[split]
            die(f"--voices {v!r}: not {what} voice; choose from {allowed}")
        out.append(known[v.lower()])
    return out


def load_vocabulary(vocabulary: Path | None, seeds: Path | None) -> Vocabulary:
    if (vocabulary is None) == (seeds is None):
        die("give the commands: --vocabulary FILE (make writes build/stamps/vocabulary.json) or --seeds DIR")
    try:
        if vocabulary is not None:
            return Vocabulary.from_mapping(json.loads(vocabulary.read_text(encoding="utf-8")))
        return read_vocabulary(seeds)  # type: ignore[arg-type]
    except (OSError, json.JSONDecodeError, KeyError, VocabularyError) as e:
        die(f"{vocabulary or seeds}: no usable commands ({e})")
    raise AssertionError("unreachable")


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser("Build the espeak-ng cross-speaker held-out set.", STAGE)
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole)")
    p.add_argument("--vocabulary", type=Path, help="the commands, as pipeline.core.vocabulary writes them")
    p.add_argument("--seeds", type=Path, help="or a seeds folder to read the commands from")
    p.add_argument("--split", choices=["dev", "eval"], default="eval",
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
    vocab = load_vocabulary(args.vocabulary, args.seeds)
    voices = parse_voices(args.voices, args.split, vocab.language)
    train_voices = training_voices(vocab.language)
    try:
        check_splits(vocab.language)
    except ValueError as e:
        die(f"pipeline/audio/tts.py: {e}")
    espeak = espeak_binary()
    minutes = args.dev_fondo_minutes if args.split == "dev" else args.fondo_minutes

    files: list[dict[str, Any]] = []
    # every file has its own generator, so files are synthesised in threads (espeak-ng runs as a process)
    # and written in order: the same folder whatever the thread count
    threads = max(1, os.cpu_count() or 1)
    with atomic_dir(args.out) as tmp, thread_pool(threads) as pool:
        for ci, word in enumerate(vocab.commands):
            (tmp / word).mkdir()
            items = [pool.submit(keyword_item, vocab.words[word], ci, k, voice, seed, args.noisy_fraction,
                                 args.snr_db_list, espeak)
                     for k, voice in enumerate(v for v in voices for _ in range(args.renditions))]
            for k, item in enumerate(items):
                audio, meta = item.result()
                files.append(_write(tmp, f"{word}/{word.lower()}_{k:04d}.wav", word, audio, meta))
            log.info("%s: %d files", word, len(items))
        (tmp / BACKGROUND_CLASS).mkdir()
        fondo_s, k = 0.0, 0
        while fondo_s < minutes * 60.0:  # a batch at a time; files past the total are dropped unwritten
            batch = [pool.submit(fondo_item, j, voices[j % len(voices)], seed, args.fondo_file_s, args.noisy_fraction,
                                 args.snr_db_list, espeak, args.split, vocab) for j in range(k, k + 2 * threads)]
            for item in batch:
                if fondo_s >= minutes * 60.0:
                    item.cancel()
                    continue
                audio, meta = item.result()
                files.append(_write(tmp, f"{BACKGROUND_CLASS}/fondo_{k:04d}.wav", BACKGROUND_CLASS, audio, meta))
                fondo_s += len(audio) / SAMPLE_RATE
                k += 1
        log.info("%s: %d files, %.1f min", BACKGROUND_CLASS, k, fondo_s / 60)
        counts = {c: sum(f["class"] == c for f in files) for c in vocab.classes}
        doc = manifest(STAGE, params={
            "split": args.split, "seed": seed, "renditions": args.renditions, "fondo_minutes": minutes,
            "fondo_file_s": args.fondo_file_s, "noisy_fraction": args.noisy_fraction,
            "snr_db_list": list(args.snr_db_list), "speeds_wpm": list(SPEEDS_WPM), "pitches": list(PITCHES),
        }, extra={
            "kind": "holdout", "generator": espeak_version(espeak),
            "classes": vocab.classes, "background_class": BACKGROUND_CLASS, "vocabulary": vocab.as_dict(),
            "near_misses": near_misses(vocab, args.split),
            "eval_voices": voices, "training_voices_excluded": train_voices,
            "counts": counts, "fondo_s": round(fondo_s, 3), "files": files,
        })
        atomic_write_json(tmp / "manifest.json", doc)
    print(f"{args.out}: {sum(counts[c] for c in vocab.commands)} keyword files ({len(voices)} voices), "
          f"{counts[BACKGROUND_CLASS]} FONDO files = {fondo_s / 60:.1f} min of keyword-free speech")
    return 0


def _write(root: Path, rel: str, cls: str, audio: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    data = wav_bytes(audio, SAMPLE_RATE)
    (root / rel).write_bytes(data)
    return {"path": rel, "class": cls, "duration_s": round(len(audio) / SAMPLE_RATE, 4),
            "sha256": sha256_bytes(data), **meta}


if __name__ == "__main__":
    raise SystemExit(run_main(main))
