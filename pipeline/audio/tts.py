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

# Speakers are espeak-ng variants (``es+f3`` and ``es-419+f3`` are one speaker), in three disjoint sets:
# evaluation and development (fixed language per voice, so the sets do not change), and the training side
# (every other variant that sounds like a person). Checked by check_splits and the tests.
EVAL_VOICES: tuple[tuple[str, str], ...] = (
    ("es", "f2"), ("es", "f4"), ("es", "m2"), ("es", "m3"), ("es", "m5"), ("es", "Andrea"),
    ("es-419", "f1"), ("es-419", "f3"), ("es-419", "f5"), ("es-419", "m4"), ("es-419", "m6"), ("es-419", "m7"),
)
DEV_VOICES: tuple[tuple[str, str], ...] = (
    ("es", "grandpa"), ("es-419", "norbert"), ("es", "shelby"), ("es-419", "victor"), ("es", "Marco"),
    ("es-419", "quincy"),
)
# Variants that do not sound like a person (robots, whisper, effects, a test voice): used by no split.
NOT_A_PERSON: tuple[str, ...] = (
    "Demonic", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8",
    "UniRobot", "anikaRobot", "whisper", "whisperf", "croak", "fast", "announcer",
)
TRAINING_VARIANTS: tuple[str, ...] = (
    "m1", "m8", "adam", "Alex", "Alicia", "antonio", "belinda", "benjamin", "david", "edward", "gustave", "miguel",
    "steph", "anika", "grandma", "travis", "Andy", "Annie", "aunty", "boris", "caleb", "Denis", "Diogo", "ed",
    "edward2", "Gene", "Gene2", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john",
    "kaukovalta", "Lee", "linda", "marcelo", "Mario", "max", "Michael", "michel", "Mike", "Mr", "Nguyen", "pablo",
    "paul", "pedro", "RicishayMax", "RicishayMax2", "RicishayMax3", "rob", "robert", "steph2", "steph3", "Storm",
    "Tweaky", "zac", "AnxiousAndy", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "sandro",
)
SPANISH = ("es", "es-419")


def split_voices(split: str, language: str = "es") -> list[str]:
    """The espeak-ng voices of ``split`` ("train", "dev", "eval") for commands in ``language``: Spanish voices
    alternate Spain and Latin America (fixed per voice for dev and eval), another language uses its own."""
    if split == "train":
        if language in SPANISH:
            return [f"{SPANISH[(k + 1) % 2]}+{v}" for k, v in enumerate(TRAINING_VARIANTS)]
        return [f"{language}+{v}" for v in TRAINING_VARIANTS]
    fixed = {"dev": DEV_VOICES, "eval": EVAL_VOICES}[split]
    return [f"{lang if language in SPANISH else language}+{v}" for lang, v in fixed]


def training_voices(language: str = "es") -> list[str]:
    """Every espeak-ng voice the training side may use: the demo seeds' command voice and the training variants."""
    return [TRAIN_VOICE, *split_voices("train", language)]


def check_splits(language: str = "es") -> None:
    """Training, development and evaluation speakers are three disjoint sets (ValueError otherwise)."""
    train, dev, ev = training_voices(language), split_voices("dev", language), split_voices("eval", language)
    check_voice_split(ev, train)
    check_voice_split(dev, train)
    check_voice_split(ev, dev)


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
        raise ValueError(f"voices {overlap} share a speaker with another split; each variant belongs to one "
                         "split (pipeline/audio/tts.py EVAL_VOICES, DEV_VOICES, TRAINING_VARIANTS)")


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
