"""espeak-ng as a speech source: the held-out voices (holdout_tts) and the training-voice speech negatives.

    from pipeline.tts import espeak_binary, speak
    audio = speak("salir", "es-419+f3", 150, 50, espeak_binary())   # float32 mono, 16 kHz
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile as sf

from pipeline.audio import resample
from pipeline.cli import die

SAMPLE_RATE = 16000


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        die("espeak-ng: not found on PATH; install it (Debian/Ubuntu: apt-get install espeak-ng)")
    return str(path)


def espeak_version(espeak: str) -> str:
    """The first line of ``espeak-ng --version``: generated audio bytes depend on it, so manifests record it."""
    r = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else "unknown"


def speak(text: str, voice: str, speed_wpm: int, pitch: int, espeak: str) -> np.ndarray:
    """``text`` spoken by espeak-ng ``voice`` as float32 mono at 16 kHz (espeak-ng itself writes 22050 Hz)."""
    cmd = [espeak, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-b", "1", "--stdout", text]
    r = subprocess.run(cmd, capture_output=True, check=False, timeout=120)
    if r.returncode != 0 or not r.stdout:
        die(f"espeak-ng -v {voice}: failed (status {r.returncode}: {r.stderr.decode(errors='replace').strip()}); "
            "check the voice exists (`espeak-ng --voices=es`, `--voices=variant`)")
    try:
        with sf.SoundFile(io.BytesIO(r.stdout)) as f:
            data, sr = f.read(dtype="float32"), int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError) as e:
        die(f"espeak-ng -v {voice}: its --stdout output is not a readable WAV ({e}); check the espeak-ng install")
    return resample(data, sr, SAMPLE_RATE)
