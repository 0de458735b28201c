"""Speech negatives for a FONDO folder: keyword-free talk by the training-side voices (``pipeline.audio.talk``).

A model that has only heard noise as FONDO calls any speech a command. ``make all`` tops FONDO up with
such talk on its own (``pipeline.stages.voices``); this tool writes it into a seeds folder, for users who
want it among their recordings: files of continuous keyword-free talk (the training corpus of
``pipeline.audio.texts`` with near-miss words derived from the seeds' commands), each utterance by the
next training-side voice (``--voices``; default: every training-side speaker, ``pipeline.audio.tts``).

Leak rules (checked by tests): the training texts are disjoint from the development and evaluation texts,
and no voice shares a speaker with the development or evaluation voices.

Inputs -> outputs: espeak-ng -> ``<out>/speech_neg_NNN.wav`` (16 kHz mono PCM_16, each written
atomically; other files in ``<out>`` are left alone). The commands to avoid and derive near misses from
are the seeds folder's (``--seeds``, default the parent of ``--out``). Deterministic for a given ``--seed``
and espeak-ng version.

Example (add speech negatives to your own seeds)::

    python -m pipeline.authoring.speech_negatives --out my-seeds/FONDO --minutes 2
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.audio import tts
from pipeline.audio.talk import talk
from pipeline.audio.wav import write_wav
from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.vocabulary import Vocabulary, VocabularyError, read_vocabulary

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FILE_PREFIX = "speech_neg_"
MASTER_SEED = 4242


# every speaker training may hear: the demo command voice and the training variants
default_voices = tts.training_voices


def check_voices(voices: Sequence[str]) -> None:
    """die() unless every voice is a training-side voice (an evaluation speaker here would leak)."""
    allowed = {tts.speaker(v) for v in default_voices()}  # speakers are variants: the same in every language
    bad = [v for v in voices if tts.speaker(v) not in allowed]
    if bad:
        die(f"--voices {','.join(bad)}: not training-side voices; choose from {','.join(default_voices())} "
            "(pipeline/audio/tts.py TRAINING_VARIANTS; evaluation voices must stay unheard)")


def write_negatives(out: Path, minutes: float, file_s: float, vocabulary: Vocabulary, seed: int = MASTER_SEED,
                    voices: Sequence[str] | None = None) -> list[Path]:
    """Write ``speech_neg_NNN.wav`` files totalling about ``minutes`` into ``out``; returns their paths."""
    voices = list(voices or default_voices(vocabulary.language))
    check_voices(voices)
    espeak = tts.espeak_binary()
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    total, k = 0.0, 0
    while total < minutes * 60.0:
        audio, texts, _ = talk(k, min(file_s, minutes * 60.0 - total), voices, "train", vocabulary, espeak, seed)
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
                                    "(default: every training-side speaker, pipeline.audio.tts.training_voices)")
    p.add_argument("--seeds", type=Path, help="seeds folder whose commands the talk avoids (default: --out's parent)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if args.minutes <= 0 or args.file_s < 1.0:
        die(f"--minutes {args.minutes} / --file-s {args.file_s}: need minutes > 0 and file-s >= 1")
    if args.out.exists() and not args.out.is_dir():
        die(f"{args.out}: exists and is not a folder; pass the FONDO folder of your seeds")
    try:
        vocab = read_vocabulary(args.seeds or args.out.parent)
    except VocabularyError as e:
        die(f"{e} (the talk must avoid the commands: give --seeds)")
    voices = [v.strip() for v in args.voices.split(",") if v.strip()] if args.voices else default_voices(vocab.language)
    paths = write_negatives(args.out, args.minutes, args.file_s, vocab, args.seed, voices)
    print(f"speech negatives: {len(paths)} files in {args.out}/ ({args.minutes:g} min, "
          f"{len(voices)} training-side voice(s), no evaluation speaker)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
