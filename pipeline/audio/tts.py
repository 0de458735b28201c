"""espeak-ng as a speech source: the held-out voices (holdout_tts) and the training-side speech negatives.

The voice split is by SPEAKER: an espeak-ng voice is ``language+variant`` and the variant (``f3``,
``m1``, ``adam``) carries the speaker's parameters (pitch, formants), so ``es+f3`` and ``es-419+f3`` are
the same speaker. ``TRAINING_VOICES`` may be used by the training side (speech negatives, demo seeds);
``pipeline.eval.holdout_tts.EVAL_VOICES`` only by evaluation; ``check_voice_split`` refuses any shared speaker.

    from pipeline.audio.tts import espeak_binary, speak
    audio = speak("salir", "es-419+f3", 150, 50, espeak_binary())   # float32 mono, 16 kHz
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterable

import numpy as np
import soundfile as sf

from pipeline.audio.wav import resample
from pipeline.core.cli import die

SAMPLE_RATE = 16000

# The voice that speaks the demo seeds' commands (pipeline.authoring.demo_seeds), as a user records them.
TRAIN_VOICE = "es-419"
# The espeak-ng voices the TRAINING side may use besides TRAIN_VOICE:
# sixteen variants (speakers) that are not evaluation speakers, alternating Spain / Latin-American Spanish.
TRAINING_VOICES: tuple[str, ...] = (
    "es-419+m1", "es+m8", "es-419+adam", "es+Alex", "es-419+Alicia", "es+antonio", "es-419+belinda", "es+benjamin",
    "es-419+david", "es+edward", "es-419+gustave", "es+miguel", "es-419+steph", "es+anika", "es-419+grandma",
    "es+travis",
)


def training_voices() -> list[str]:
    """Every espeak-ng voice the training side may use: the demo seeds' command voice and TRAINING_VOICES."""
    return [TRAIN_VOICE, *TRAINING_VOICES]


def speaker(voice: str) -> str:
    """The speaker identity of a voice, case-insensitive: the variant of an espeak-ng ``language+variant``
    voice (``es+f3`` and ``es-419+f3`` are one speaker), else the whole name (a bare ``es-419``, a person)."""
    name = voice.strip().lower()
    _, plus, variant = name.partition("+")
    return variant if plus and variant else name


def check_voice_split(eval_voices: Iterable[str], train_voices: Iterable[str]) -> None:
    """Raise ValueError if an evaluation voice shares its speaker (variant) with a training voice."""
    train = {speaker(v): v for v in train_voices}
    overlap = sorted(f"{v} (speaker {speaker(v)!r}, training voice {train[speaker(v)]})"
                     for v in eval_voices if speaker(v) in train)
    if overlap:
        raise ValueError(f"evaluation voices {overlap} share a speaker with the training side; "
                         "remove them from pipeline.eval.holdout_tts.EVAL_VOICES or pipeline.audio.tts.TRAINING_VOICES")


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
