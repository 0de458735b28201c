"""Stage 0, voices: the commands and keyword-free talk by many synthetic speakers, beside the user's seeds.

One recording per command teaches a model one voice. This stage adds, for the dataset stage to draw from:

- positives: every command (``pipeline.core.vocabulary``) spoken by every training-side espeak-ng speaker
  (``pipeline.audio.tts.split_voices("train")``, 67 variants; never a development or evaluation speaker),
  ``takes_per_voice`` times at drawn speeds and pitches, each take 1.7 s with the word inside quiet room
  noise, like a user's seed: ``<out>/<CLASS>/tts_NNNNN.wav``;
- neural takes: every command ``neural_takes`` times by the neural voice (``pipeline.audio.neural_tts``,
  Kokoro-82M), each take in its own drawn timbre, placed like an espeak-ng take:
  ``<out>/<CLASS>/neural_NNNNN.wav``. espeak-ng alone teaches what espeak-ng sounds like, and a real voice is
  then taken for background;
- near misses: every near-miss word derived from the commands (``pipeline.audio.texts.near_misses``, the
  training rules) by every speaker, ``near_misses_per_voice`` times, isolated like a command:
  ``<out>/FONDO/near_miss_NNNNN.wav``, and ``neural_near_misses`` times by the neural voice:
  ``<out>/FONDO/near_miss_neural_NNNNN.wav`` (the dataset stage makes background clips around them as it makes
  command clips, so "sounds like a command" is not enough to be one);
- talk: keyword-free talk (``pipeline.audio.talk``; near-miss words derived from the commands) by the same
  speakers, as much as FONDO needs to hold ``talk_minutes`` of talk: the user's FONDO is measured
  (``pipeline.audio.speechiness``) and topped up, and the log says by how much:
  ``<out>/FONDO/speech_neg_tts_NNN.wav``; and ``neural_talk_minutes`` of talk by the neural voice, each
  utterance in its own timbre: ``<out>/FONDO/speech_neg_tts_neural_NNN.wav`` (so that sounding like the
  neural voice is not enough to be a command).

The dataset stage takes ``<out>`` as ``--extra-seeds`` and keeps a stated share of each command's clips
(``user_share``) for the user's own recordings.

Inputs -> outputs: the vocabulary, the seeds' FONDO, espeak-ng, the pinned Kokoro files -> ``<out>/`` (replaced
as a whole) with ``manifest.json`` written last (every file's voice, speed, pitch or timbre, and text).
Deterministic for a seed, an espeak-ng version and the pinned Kokoro model.

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
from pipeline.audio.neural_tts import LICENSE as NEURAL_LICENSE
from pipeline.audio.neural_tts import MODEL_SHA256 as NEURAL_SHA256
from pipeline.audio.neural_tts import NeuralTTSError, NeuralVoice, SpeechCache, Timbre, draw_timbre
from pipeline.audio.speechiness import talk_seconds
from pipeline.audio.talk import NEAR_MISS_PREFIX, TALK_PREFIX, talk, trim_silence, utterances
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
NEURAL_PREFIX = "neural_"      # takes by the neural voice (pipeline.audio.neural_tts)
NEURAL_STREAM = 1000           # generator streams of the neural voice's files: apart from the espeak-ng ones


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
    return place(word, rng, {"voice": voice, "speed_wpm": speed, "pitch": pitch, "text": text})


def neural_take(text: str, kokoro: NeuralVoice, language: str,
                rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """One take of a command by the neural voice, in a timbre drawn from ``rng``, placed as ``take`` places it."""
    timbre = draw_timbre(rng, language)
    word = neural_speak(kokoro, text, timbre)
    if word.size == 0:
        die(f"the neural voice said nothing for {text!r}; check the language in words.toml")
    return place(word, rng, {**timbre.as_dict(), "text": text})


def neural_speak(kokoro: NeuralVoice, text: str, timbre: Timbre) -> np.ndarray:
    try:
        return kokoro.speak(text, timbre)
    except NeuralTTSError as e:
        die(str(e))


def neural_talk(index: int, seconds: float, kokoro: NeuralVoice, vocab: Vocabulary,
                seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """About ``seconds`` of keyword-free talk by the neural voice, each utterance in its own drawn timbre."""
    def say(text: str, j: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        return neural_speak(kokoro, text, draw_timbre(rng, vocab.language)), "kokoro"

    return utterances(np.random.default_rng([seed, NEURAL_STREAM, index]), seconds, "train", vocab, say,
                      seed * 1000 + NEURAL_STREAM + index)


def cache_use(kokoro: NeuralVoice) -> dict[str, Any] | None:
    """Where the neural voice's cache is and how much of this run came from it (None: no cache)."""
    c = kokoro.cache
    return None if c is None else {"dir": str(c.root), "taken": c.hits, "said_and_kept": c.stored}


def place(word: np.ndarray, rng: np.random.Generator, meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The word at a drawn level and lead inside ``TAKE_S`` of quiet room noise, like a user's seed."""
    peak = float(rng.uniform(*PEAK))
    word = word * np.float32(peak / max(float(np.max(np.abs(word))), 1e-9))
    lead = int(rng.uniform(*LEAD_S) * SAMPLE_RATE)
    n = max(int(TAKE_S * SAMPLE_RATE), lead + word.size + int(0.25 * SAMPLE_RATE))
    audio = coloured_noise(n, "pink", int(rng.integers(2**31))) * np.float32(10 ** (ROOM_NOISE_DBFS / 20))
    audio[lead: lead + word.size] += word
    return audio.astype(np.float32), {**meta, "peak": round(peak, 3)}


def build_parser() -> Any:
    p = stage_parser(__doc__.split("\n\n")[0], STAGE)
    p.add_argument("--vocabulary", type=Path, help="the commands, as pipeline.core.vocabulary writes them")
    p.add_argument("--seeds", type=Path, required=True, help="the user's seeds folder (its FONDO is measured for talk)")
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole)")
    p.add_argument("--neural-cache", type=Path, default=None,
                   help="keep what the neural voice says in this folder and take it back from there on later runs "
                        "(the same files either way; default: no cache)")
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
    kokoro = None
    if (args.neural_takes and args.tts_positives) or args.neural_near_misses or args.neural_talk_minutes:
        cache = None
        if args.neural_cache is not None:
            try:
                args.neural_cache.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                die(f"--neural-cache {args.neural_cache}: cannot be made ({e.strerror}); name a writable folder, "
                    "or build without it (make NEURAL_CACHE=)")
            cache = SpeechCache(args.neural_cache)
        try:
            kokoro = NeuralVoice.load(espeak, cache)
        except NeuralTTSError as e:
            die(str(e))
    with atomic_dir(args.out) as tmp, thread_pool(threads) as pool:
        if args.tts_positives:
            for ci, cls in enumerate(vocab.commands):
                (tmp / cls).mkdir()
                n = len(voices) * args.takes_per_voice
                jobs = [pool.submit(take, vocab.words[cls], voices[k % len(voices)],
                                    np.random.default_rng([args.seed, ci, k]), espeak) for k in range(n)]
                for k, job in enumerate(jobs):
                    write(tmp, f"{cls}/tts_{k:05d}.wav", cls, *job.result())
                jobs = [pool.submit(neural_take, vocab.words[cls], kokoro, vocab.language,
                                    np.random.default_rng([args.seed, NEURAL_STREAM + ci, k]))
                        for k in range(args.neural_takes if kokoro else 0)]
                for k, job in enumerate(jobs):
                    write(tmp, f"{cls}/{NEURAL_PREFIX}{k:05d}.wav", cls, *job.result())
                log.info("%s: %d takes by %d speakers, %d by neural timbres", cls, n, len(voices), len(jobs))
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
        jobs = [pool.submit(neural_take, misses[k % len(misses)], kokoro, vocab.language,
                            np.random.default_rng([args.seed, NEURAL_STREAM + bg_index, k]))
                for k in range(len(misses) * args.neural_near_misses if kokoro else 0)]
        for k, job in enumerate(jobs):
            audio, meta = job.result()
            write(tmp, f"{vocab.background}/{NEAR_MISS_PREFIX}{NEURAL_PREFIX}{k:05d}.wav", vocab.background, audio,
                  {"near_miss": True, **meta})
        if jobs:
            log.info("near misses: %d words x %d neural timbres", len(misses), args.neural_near_misses)
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
        neural_talk_s = args.neural_talk_minutes * 60.0 if kokoro else 0.0
        n_files = int(np.ceil(neural_talk_s / args.talk_file_s - 1e-9))
        jobs = [pool.submit(neural_talk, j, min(args.talk_file_s, neural_talk_s - j * args.talk_file_s), kokoro, vocab,
                            args.seed) for j in range(n_files)]
        neural_s = 0.0
        for j, job in enumerate(jobs):
            audio, texts, _ = job.result()
            write(tmp, f"{vocab.background}/{TALK_PREFIX}{NEURAL_PREFIX}{j:03d}.wav", vocab.background, audio,
                  {"duration_s": round(audio.size / SAMPLE_RATE, 3), "voices": ["kokoro"], "texts": texts})
            neural_s += audio.size / SAMPLE_RATE
        if jobs:
            log.info("talk by neural timbres: %.1f min in %d file(s)", neural_s / 60, len(jobs))
        counts = {c: sum(f["class"] == c for f in files) for c in vocab.classes}
        atomic_write_json(tmp / "manifest.json", manifest(STAGE, inputs=[], params=args.params_used, extra={
            "vocabulary": vocab.as_dict(), "generator": tts.espeak_version(espeak), "voices": voices,
            "neural_voice": ({"model_sha256": NEURAL_SHA256, "license": NEURAL_LICENSE, "cache": cache_use(kokoro)}
                             if kokoro else None),
            "user_talk_s": round(user_talk_s, 1), "user_talk_per_file_s": per_file, "talk_added_s": round(done_s, 1),
            "neural_talk_s": round(neural_s, 1),
            "near_misses": misses, "counts": counts, "files": files,
        }))
    neural = sum(f["path"].split("/")[-1].startswith(NEURAL_PREFIX) for f in files)
    if kokoro is not None and kokoro.cache is not None:
        log.info("neural voice: %d utterances taken from the cache %s, %d said and kept there",
                 kokoro.cache.hits, kokoro.cache.root, kokoro.cache.stored)
    print(f"voices: {sum(counts[c] for c in vocab.commands)} command takes by {len(voices)} synthetic speakers "
          f"and {neural} by neural timbres, "
          f"{(done_s + neural_s) / 60:.1f} min of talk added ({neural_s / 60:.1f} by neural timbres) to FONDO's "
          f"{user_talk_s / 60:.1f} min -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
