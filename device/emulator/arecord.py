#!/usr/bin/env python3
"""arecord BOARD EMULATOR: ALSA capture imitated by playing a WAV at real-time pace.

The "microphone" is the WAV at ``$AX_EMULATOR_MIC`` (default /var/lib/ax-emulator/mic.wav; 16-bit PCM
mono at the requested rate), then silence for as long as the capture runs; no file: silence only. Accepts
the flags the runtime and ``invoke record`` use: ``-D DEVICE -f S16_LE|S32_LE -r RATE -c 1 -t raw|wav
-d SECONDS -q [FILE]`` (no FILE or ``-``: stdout). Devices: ``default``, ``hw:0,0``, ``plughw:0,0`` (the
LLM Kit's capture device); any other is refused with arecord's message. Stdlib only.
"""

from __future__ import annotations

import argparse
import array
import os
import signal
import struct
import sys
import time
import wave

DEVICES = ("default", "hw:0,0", "plughw:0,0")
DEFAULT_MIC = "/var/lib/ax-emulator/mic.wav"
CHUNK_S = 0.02


def _wav_header(rate: int, width: int, n_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * width,
            width, 8 * width) + b"data" + struct.pack("<I", n_bytes))


def _mic_samples(rate: int) -> array.array:
    path = os.environ.get("AX_EMULATOR_MIC", DEFAULT_MIC)
    if not os.path.isfile(path):
        return array.array("h")
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != rate:
            sys.stderr.write(f"arecord [EMULATOR]: {path} must be 16-bit mono {rate} Hz; playing silence\n")
            return array.array("h")
        a = array.array("h")
        a.frombytes(w.readframes(w.getnframes()))
    if sys.byteorder != "little":
        a.byteswap()
    return a


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="arecord", add_help=False)
    p.add_argument("-D", "--device", default="default")
    p.add_argument("-f", "--format", default="U8")
    p.add_argument("-r", "--rate", type=int, default=8000)
    p.add_argument("-c", "--channels", type=int, default=1)
    p.add_argument("-t", "--file-type", default="wav")
    p.add_argument("-d", "--duration", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--help", action="store_true")
    p.add_argument("file", nargs="?", default="-")
    args = p.parse_args(argv)
    if args.help:
        print("arecord BOARD EMULATOR (plays $AX_EMULATOR_MIC at real-time pace); not ALSA")
        return 0
    if args.device not in DEVICES:
        sys.stderr.write("arecord: main:831: audio open error: No such file or directory\n")
        return 1
    widths = {"S16_LE": 2, "S32_LE": 4}
    if args.format not in widths or args.channels != 1:
        sys.stderr.write(f"arecord [EMULATOR]: only -f S16_LE|S32_LE -c 1 are emulated (got -f {args.format} -c {args.channels})\n")
        return 1
    width, rate = widths[args.format], args.rate
    mic = _mic_samples(rate)
    total = args.duration * rate if args.duration > 0 else None
    out = sys.stdout.buffer if args.file == "-" else open(args.file, "wb")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    if args.file_type == "wav":
        out.write(_wav_header(rate, width, (total or 0x7FFFFFF0 // width) * width))
    chunk = max(1, int(rate * CHUNK_S))
    t0, done = time.monotonic(), 0
    try:
        while total is None or done < total:
            n = chunk if total is None else min(chunk, total - done)
            part = mic[done: done + n]
            samples = array.array("h", part) + array.array("h", bytes(2 * (n - len(part))))
            if width == 4:
                data = array.array("i", (s << 16 for s in samples))
            else:
                data = samples
            if sys.byteorder != "little":
                data.byteswap()
            out.write(data.tobytes())
            out.flush()
            done += n
            delay = t0 + done / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except BrokenPipeError:
        return 0
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
