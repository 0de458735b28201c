"""Two WAVs to try a spotter on as a stream: the demo voice saying commands in a room, and keyword-free talk.

- ``commands.wav``: the seed take of each of ``--commands`` (default three of the seeds' commands) at
  ``--spacing-s`` intervals over a quiet room (the seeds' fan-noise background at -40 dBFS RMS);
  ``commands.json`` lists which command starts when.
- ``talk.wav``: ``--talk-s`` seconds of keyword-free talk by the development-side espeak-ng speakers (texts of
  the development corpus: no training text and no training speaker).

Used by the listen tests and CI (``invoke listen --wav``) and the runtime benchmark.

    python -m pipeline.authoring.demo_stream --seeds data/demo-seeds --out data/demo-stream
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.audio import tts
from pipeline.audio.locate import locate_word
from pipeline.audio.talk import talk
from pipeline.audio.wav import SAMPLE_RATE, load_audio, write_wav
from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.io import atomic_write_json
from pipeline.core.vocabulary import read_vocabulary

ROOM_DBFS = -40.0


def seed_word(seeds: Path, cls: str) -> np.ndarray:
    files = sorted((seeds / cls).glob("*.wav"))
    if not files:
        die(f"{seeds / cls}: no seed WAV")
    audio = load_audio(files[0])
    span = locate_word(audio, name=str(files[0]))
    return audio[span.start: span.end]


def room(seeds: Path, n: int) -> np.ndarray:
    fans = sorted((seeds / "FONDO").glob("*fan*.wav")) or sorted((seeds / "FONDO").glob("*.wav"))
    if not fans:
        die(f"{seeds / 'FONDO'}: no background WAV for the room")
    x = load_audio(fans[0])
    x = np.tile(x, -(-n // x.size))[:n]
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0
    return (x * (10 ** (ROOM_DBFS / 20) / rms)).astype(np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=Path, default=Path("data/demo-seeds"))
    p.add_argument("--out", type=Path, default=Path("data/demo-stream"))
    p.add_argument("--commands", default="", help="comma-separated commands (default: the first three)")
    p.add_argument("--spacing-s", type=float, default=3.0)
    p.add_argument("--talk-s", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=77)
    args = p.parse_args(argv)
    setup_logging()
    vocab = read_vocabulary(args.seeds)
    commands = [c for c in args.commands.split(",") if c] or vocab.commands[:3]
    spacing = round(args.spacing_s * SAMPLE_RATE)
    total = spacing * (len(commands) + 1)
    audio = room(args.seeds, total)
    starts = []
    for i, cls in enumerate(commands):
        word = seed_word(args.seeds, cls)
        at = spacing * (i + 1) - word.size // 2
        audio[at: at + word.size] += word
        starts.append({"class": cls, "start_s": round(at / SAMPLE_RATE, 3), "end_s": round((at + word.size) / SAMPLE_RATE, 3)})
    args.out.mkdir(parents=True, exist_ok=True)
    write_wav(args.out / "commands.wav", audio)
    atomic_write_json(args.out / "commands.json", {"commands": starts, "duration_s": total / SAMPLE_RATE})
    voices = tts.split_voices("dev", vocab.language)
    speech, _, _ = talk(0, args.talk_s, voices, "dev", vocab, tts.espeak_binary(), args.seed)
    write_wav(args.out / "talk.wav", speech + room(args.seeds, speech.size))
    print(f"wrote {args.out}/commands.wav ({', '.join(commands)}; {total / SAMPLE_RATE:.1f} s) and talk.wav "
          f"({speech.size / SAMPLE_RATE:.1f} s, {len(voices)} development speakers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
