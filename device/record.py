"""``invoke record``: takes of a command on the board's microphone, checked, into ``<SEEDS>/<CLASS>/``.

Each take is captured on the board (``arecord``, 32-bit: the LLM Kit's driver garbles 16-bit capture), pulled,
converted to 16-bit PCM and checked with the dataset's own checks (``pipeline.audio.locate.check_command_take``:
not clipped, not silent, a word that stands out, short enough for a clip; a FONDO take: not clipped, not
silent). A take that passes is written (atomically, a new unique name) beside the user's seeds, so the next
``make all`` uses it; one that fails is refused with the reason and nothing is written for it.
"""

from __future__ import annotations

import math
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import paramiko
from fabric import Connection

from device.remote import script
from device.ssh import ConnectionLost, DeviceError, run_script, script_command, tail
from pipeline.audio.locate import CLIPPED_FRACTION, FULL_SCALE, check_command_take
from pipeline.audio.wav import SAMPLE_RATE, AudioError, write_wav
from pipeline.core.vocabulary import BACKGROUND_CLASS

CLASS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SILENT_BACKGROUND_DBFS = -70.0


def check_take(audio: np.ndarray, cls: str, clip_samples: int, name: str) -> str:
    """A one-line description of a good take; AudioError with the reason for a bad one."""
    if cls != BACKGROUND_CLASS:
        word = check_command_take(audio, clip_samples, SAMPLE_RATE, name=name)
        return f"word at {word.start / SAMPLE_RATE:.2f}-{word.end / SAMPLE_RATE:.2f} s, peak {word.peak_dbfs:.0f} dBFS"
    full = int(np.count_nonzero(np.abs(audio) >= FULL_SCALE))
    if audio.size and full > CLIPPED_FRACTION * audio.size:
        raise AudioError(f"{name}: clipped ({full} samples at full scale); record it again with the input gain lower")
    level = 20 * math.log10(max(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))), 1e-12))
    if level < SILENT_BACKGROUND_DBFS:
        raise AudioError(f"{name}: all silent ({level:.0f} dBFS RMS); check the microphone and the input gain")
    return f"background, {level:.0f} dBFS RMS"


def _read_take(path: Path) -> np.ndarray:
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioError(f"the board's take is not a readable WAV ({e})") from None
    if rate != SAMPLE_RATE:
        raise AudioError(f"the board recorded {rate} Hz, not {SAMPLE_RATE} Hz")
    return audio.mean(axis=1)


def unique_path(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.wav"
    n = 1
    while path.exists():
        path = folder / f"{stem}-{n}.wav"
        n += 1
    return path


def record(conn: Connection, remote_root: str, seeds: Path, cls: str, takes: int, seconds: int,
           device: str, fmt: str, clip_samples: int, log: TextIO = sys.stderr) -> dict[str, Any]:
    if not CLASS_RE.match(cls):
        raise DeviceError(f"--class {cls!r}: a class is a folder name (letters, digits, _ and -), e.g. SALIR")
    if takes < 1 or seconds < 1:
        raise DeviceError(f"--takes {takes} --seconds {seconds}: both must be at least 1")
    folder = seeds / cls
    kept: list[dict[str, str]] = []
    refused: list[dict[str, str]] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    host = re.sub(r"[^A-Za-z0-9]+", "-", conn.host)
    for i in range(1, takes + 1):
        what = f"take {i}/{takes}"
        log.write(f"{what}: say {cls!r} now ({seconds} s on {device}) ...\n")
        log.flush()
        name = f"rec-{secrets.token_hex(4)}.wav"
        r = run_script(conn, script("record"), [remote_root, device, fmt, str(seconds), name], "record")
        if r.exited != 0:
            raise DeviceError(f"{conn.host}: {tail(r.stderr) or 'recording failed'}")
        remote = r.stdout.strip().splitlines()[-1]
        with tempfile.TemporaryDirectory(prefix="kws-record-") as tmp:
            local = Path(tmp) / name
            try:
                conn.get(remote, str(local))
                conn.run(script_command('rm -f "$1"', [remote]), hide=True, warn=True, in_stream=False)
            except (OSError, EOFError, paramiko.SSHException) as e:
                raise ConnectionLost(f"{conn.host}: fetching {remote} failed ({type(e).__name__}: {e})") from None
            try:
                audio = _read_take(local)
                how = check_take(audio, cls, clip_samples, what)
            except AudioError as e:
                refused.append({"take": what, "reason": str(e)})
                log.write(f"  refused: {e}\n")
                continue
        folder.mkdir(parents=True, exist_ok=True)
        path = unique_path(folder, f"{stamp}_{host}_{i:02d}")
        write_wav(path, audio)
        kept.append({"take": what, "path": str(path), "check": how})
        log.write(f"  kept {path} ({how})\n")
    return {"host": conn.host, "class": cls, "kept": kept, "refused": refused}
