"""Stage 0, voices: the commands and keyword-free talk by many synthetic speakers, beside the user's seeds.

One recording per command teaches a model one voice. This stage adds, for the dataset stage to draw from:

- positives: every command (``pipeline.core.vocabulary``) spoken by every training-side espeak-ng speaker
  (``pipeline.audio.tts.split_voices("train")``, 67 variants; never a development or evaluation speaker),
  ``takes_per_voice`` times at drawn speeds and pitches, each take 1.7 s with the word inside quiet room
  noise, like a user's seed: ``<out>/<CLASS>/tts_NNNNN.wav``;
- near misses: every near-miss word derived from the commands (``pipeline.audio.texts.near_misses``, the
  training rules) by every speaker, ``near_misses_per_voice`` times, isolated like a command:
  ``<out>/FONDO/near_miss_NNNNN.wav`` (the dataset stage makes background clips around them as it makes
  command clips, so "sounds like a command" is not enough to be one);
- talk: keyword-free talk (``pipeline.audio.talk``; near-miss words derived from the commands) by the same
  speakers, as much as FONDO needs to hold ``talk_minutes`` of talk: the user's FONDO is measured
  (``pipeline.audio.speechiness``) and topped up, and the log says by how much:
  ``<out>/FONDO/speech_neg_tts_NNN.wav``.

The dataset stage takes ``<out>`` as ``--extra-seeds`` and keeps a stated share of each command's clips
(``user_share``) for the user's own recordings.

Inputs -> outputs: the vocabulary, the seeds' FONDO, espeak-ng -> ``<out>/`` (replaced as a whole) with
``manifest.json`` written last (every file's voice, speed, pitch and text). Deterministic for a seed and an
espeak-ng version.

    python -m pipeline.stages.voices --vocabulary build/stamps/vocabulary.json --seeds data/demo-seeds --out build/voices
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import tts
from pipeline.audio.augment import coloured_noise
from pipeline.audio.speechiness import talk_seconds
from pipeline.audio.talk import NEAR_MISS_PREFIX, TALK_PREFIX, talk, trim_silence
from pipeline.audio.texts import near_misses
from pipeline.audio.wav import AudioError, load_audio, wav_bytes
from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_dir, atomic_write_json, sha256_bytes
from pipeline.core.provenance import manifest
from pipeline.core.vocabulary import Vocabulary, VocabularyError, read_vocabulary
from pipeline.core.workers import thread_pool

log = logging.getLogger(__name__)

STAGE = "voices"
SAMPLE_RATE = 16000
TAKE_S = 1.7
LEAD_S = (0.25, 0.45)          # quiet before the word in a take
SPEEDS_WPM = (115, 190)        # espeak-ng -s, uniform
PITCHES = (20, 80)             # espeak-ng -p, uniform
PEAK = (0.25, 0.6)             # the word's peak level, uniform
ROOM_NOISE_DBFS = -55.0        # pink room noise under a take, as in a user's recording
WAV_SUFFIXES = (".wav", ".WAV")


def user_talk_seconds(fondo: Path) -> tuple[float, dict[str, float]]:
    """Seconds of talk in the user's FONDO recordings (total, and per file)."""
    per_file: dict[str, float] = {}
    for p in sorted(x for x in fondo.glob("*") if x.suffix in WAV_SUFFIXES and x.is_file()):
        try:
            per_file[p.name] = round(talk_seconds(load_audio(p)), 1)
        except AudioError as e:
            die(str(e))
    return sum(per_file.values()), per_file


def take(text: str, voice: str, rng: np.random.Generator, espeak: str) -> tuple[np.ndarray, dict[str, Any]]:
    """One take of a command: the word inside ``TAKE_S`` of room noise, at a drawn speed, pitch and level."""
    speed, pitch = int(rng.integers(*SPEEDS_WPM)), int(rng.integers(*PITCHES))
    word = trim_silence(tts.speak(text, voice, speed, pitch, espeak))
    if word.size == 0:
        die(f"espeak-ng -v {voice}: said nothing for {text!r}; check the language in words.toml")
    peak = float(rng.uniform(*PEAK))
    word = word * np.float32(peak / max(float(np.max(np.abs(word))), 1e-9))
    lead = int(rng.uniform(*LEAD_S) * SAMPLE_RATE)
    n = max(int(TAKE_S * SAMPLE_RATE), lead + word.size + int(0.25 * SAMPLE_RATE))
    audio = coloured_noise(n, "pink", int(rng.integers(2**31))) * np.float32(10 ** (ROOM_NOISE_DBFS / 20))
    audio[lead: lead + word.size] += word
    return audio.astype(np.float32), {"voice": voice, "speed_wpm": speed, "pitch": pitch, "peak": round(peak, 3),
                                      "text": text}


def build_parser() -> Any:
    p = stage_parser(__doc__.split("\n\n")[0], STAGE)
    p.add_argument("--vocabulary", type=Path, help="the commands, as pipeline.core.vocabulary writes them")
    p.add_argument("--seeds", type=Path, required=True, help="the user's seeds folder (its FONDO is measured for talk)")
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_stage_args(build_parser(), argv, STAGE)
    setup_logging(args.verbose)
    try:
        vocab = (Vocabulary.from_mapping(json.loads(args.vocabulary.read_text(encoding="utf-8")))
                 if args.vocabulary is not None else read_vocabulary(args.seeds))
    except (OSError, json.JSONDecodeError, KeyError, VocabularyError) as e:
        die(f"{args.vocabulary or args.seeds}: no usable commands ({e})")
    voices = tts.split_voices("train", vocab.language)
    if args.max_voices:  # spread over the list, which alternates languages and sexes
        voices = voices[:: max(1, len(voices) // args.max_voices)][: args.max_voices]
    espeak = tts.espeak_binary()
    fondo = args.seeds / vocab.background
    user_talk_s, per_file = user_talk_seconds(fondo) if fondo.is_dir() else (0.0, {})
    talk_s = max(0.0, args.talk_minutes * 60.0 - user_talk_s)
    log.info("FONDO of %s holds about %.1f min of talk; adding %.1f min by %d synthetic speakers (talk_minutes %g)",
             args.seeds, user_talk_s / 60, talk_s / 60, len(voices), args.talk_minutes)
    files: list[dict[str, Any]] = []

    def write(tmp: Path, rel: str, cls: str, audio: np.ndarray, meta: dict[str, Any]) -> None:
        data = wav_bytes(audio, SAMPLE_RATE)
        (tmp / rel).write_bytes(data)
        files.append({"path": rel, "class": cls, "sha256": sha256_bytes(data), **meta})

    # Every take and talk file has its own generator, so they are synthesised in threads (espeak-ng runs as a
    # process, resampling releases the GIL) and written in order: the same folder whatever the thread count.
    threads = max(1, os.cpu_count() or 1)
    with atomic_dir(args.out) as tmp, thread_pool(threads) as pool:
        if args.tts_positives:
            for ci, cls in enumerate(vocab.commands):
                (tmp / cls).mkdir()
                n = len(voices) * args.takes_per_voice
                jobs = [pool.submit(take, vocab.words[cls], voices[k % len(voices)],
                                    np.random.default_rng([args.seed, ci, k]), espeak) for k in range(n)]
                for k, job in enumerate(jobs):
                    write(tmp, f"{cls}/tts_{k:05d}.wav", cls, *job.result())
                log.info("%s: %d takes by %d speakers", cls, n, len(voices))
        (tmp / vocab.background).mkdir()
        misses = near_misses(vocab, "train")
        bg_index = len(vocab.commands)
        jobs = [pool.submit(take, misses[k % len(misses)], voices[(k // len(misses)) % len(voices)],
                            np.random.default_rng([args.seed, bg_index, k]), espeak)
                for k in range(len(misses) * len(voices) * args.near_misses_per_voice)]
        for k, job in enumerate(jobs):
            audio, meta = job.result()
            write(tmp, f"{vocab.background}/{NEAR_MISS_PREFIX}{k:05d}.wav", vocab.background, audio,
                  {"near_miss": True, **meta})
        if misses and args.near_misses_per_voice:
            log.info("near misses: %d words x %d speakers x %d", len(misses), len(voices), args.near_misses_per_voice)
        # Talk file k holds min(talk_file_s, what is still missing) seconds: every file but the last is whole,
        # so the next few are made ahead as whole files and the last one again at its own length.
        done_s, k = 0.0, 0
        ahead: dict[int, concurrent.futures.Future[tuple[np.ndarray, list[str], list[str]]]] = {}
        while done_s < talk_s - 0.5:
            for j in range(k, k + 2 * threads):
                if j not in ahead:
                    ahead[j] = pool.submit(talk, j, args.talk_file_s, voices, "train", vocab, espeak, args.seed)
            seconds = min(args.talk_file_s, talk_s - done_s)
            job = ahead.pop(k)
            if seconds < args.talk_file_s:
                job.cancel()
                audio, texts, used = talk(k, seconds, voices, "train", vocab, espeak, args.seed)
            else:
                audio, texts, used = job.result()
            write(tmp, f"{vocab.background}/{TALK_PREFIX}{k:03d}.wav", vocab.background, audio,
                  {"duration_s": round(audio.size / SAMPLE_RATE, 3), "voices": sorted(set(used)), "texts": texts})
            done_s += audio.size / SAMPLE_RATE
            k += 1
        for job in ahead.values():
            job.cancel()
        counts = {c: sum(f["class"] == c for f in files) for c in vocab.classes}
        atomic_write_json(tmp / "manifest.json", manifest(STAGE, inputs=[], params=args.params_used, extra={
            "vocabulary": vocab.as_dict(), "generator": tts.espeak_version(espeak), "voices": voices,
            "user_talk_s": round(user_talk_s, 1), "user_talk_per_file_s": per_file, "talk_added_s": round(done_s, 1),
            "near_misses": misses, "counts": counts, "files": files,
        }))
    print(f"voices: {sum(counts[c] for c in vocab.commands)} command takes by {len(voices)} synthetic speakers, "
          f"{done_s / 60:.1f} min of talk added to FONDO's {user_talk_s / 60:.1f} min -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
