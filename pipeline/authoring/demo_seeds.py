"""Generate the demo seed set: the command words of a words.toml spoken by espeak-ng + 4 synthetic backgrounds.

So a new user's ``make all`` works with no recordings of their own. The commands come from ``--words``
(``language`` and a ``[words]`` table, ``pipeline.core.vocabulary``; default ``data/demo-seeds/words.toml``,
copied into the output). Output (replaced as a whole):
``<out>/<WORD>/000_<word>.wav`` (16 kHz mono 16-bit, ~1.7 s, the word inside quiet room noise),
``<out>/FONDO/00k_<kind>.wav`` (brown noise, pink noise, mains hum with harmonics, fan noise; 4 s each),
``<out>/FONDO/speech_neg_NNN.wav`` (about a minute of keyword-free Spanish speech and near-miss words by
the training-side voices, ``pipeline.authoring.speech_negatives``, so the model learns that talk is background)
and ``<out>/README.md`` saying how they were made. Deterministic: the same espeak-ng version gives the
same bytes. The commands are spoken by ONE voice (TRAIN_VOICE), as a user records them; the talk in FONDO
by the training-side voices (``pipeline.audio.tts.training_voices``); held-out evaluation uses other speakers.

Example::

    python -m pipeline.authoring.demo_seeds --words data/demo-seeds/words.toml --out data/demo-seeds
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.audio.augment import coloured_noise
from pipeline.audio.locate import locate_word
from pipeline.audio.tts import SPANISH, TRAIN_VOICE, training_voices
from pipeline.audio.wav import AudioError, read_audio, write_wav
from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.io import atomic_dir, atomic_write_text
from pipeline.core.vocabulary import BACKGROUND_CLASS, Vocabulary

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEMO_WORDS = Path(__file__).resolve().parents[2] / "data" / "demo-seeds" / "words.toml"
# The one training voice. A held-out evaluation must use OTHER voices/speeds/pitches.
TRAIN_SPEED_WPM = 150
TRAIN_PITCH = 50  # espeak-ng -p, 0-99
TRAIN_AMPLITUDE = 100  # espeak-ng -a, 0-200
SEED_LENGTH_S = 1.7
WORD_ONSET_S = 0.4  # where the word starts in the seed
WORD_PEAK = 0.5  # word peak level after normalisation (about -6 dBFS)
ROOM_NOISE_DBFS = -55.0  # light pink room noise under the word
FONDO_LENGTH_S = 4.0
SPEECH_NEG_MINUTES = 1.0  # keyword-free speech in FONDO (measured: docs/results.md)
SPEECH_NEG_FILE_S = 15.0
MASTER_SEED = 20251123


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        die("espeak-ng: not found on PATH; install it with `apt-get install espeak-ng` (Debian/Ubuntu) and re-run "
            "`make demo-seeds`")
    return exe


def command_voice(language: str) -> str:
    """The demo's command voice: TRAIN_VOICE for Spanish, the language's own default voice otherwise."""
    return TRAIN_VOICE if language in SPANISH else language


def speak(text: str, index: int, workdir: Path, exe: str, voice: str = TRAIN_VOICE) -> np.ndarray:
    """One command from espeak-ng with the command voice, as 16 kHz float32."""
    wav = workdir / f"{index:03d}.wav"
    cmd = [exe, "-v", voice, "-s", str(TRAIN_SPEED_WPM), "-p", str(TRAIN_PITCH), "-a", str(TRAIN_AMPLITUDE),
           "-w", str(wav), text]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0 or not wav.exists():
        die(f"espeak-ng: `{' '.join(cmd)}` failed ({r.stderr.strip() or r.returncode}); check that the voice "
            f"{voice!r} exists (`espeak-ng --voices`)")
    try:
        audio, _ = read_audio(wav, SAMPLE_RATE)  # espeak-ng writes 22050 Hz: resampled (and logged) here
    except AudioError as e:
        die(str(e))
    return audio


def word_seed(spoken: np.ndarray, index: int) -> np.ndarray:
    """Place the word (trimmed to its located span) at WORD_ONSET_S in SEED_LENGTH_S of quiet room noise."""
    span = locate_word(spoken, SAMPLE_RATE, name="espeak-ng output")
    word = spoken[span.start: span.end]
    word = word * np.float32(WORD_PEAK / max(float(np.max(np.abs(word))), 1e-9))
    n = int(SEED_LENGTH_S * SAMPLE_RATE)
    a = int(WORD_ONSET_S * SAMPLE_RATE)
    if a + word.size > n:
        raise AudioError(f"espeak-ng word {index} is {word.size / SAMPLE_RATE:.2f} s, too long for the seed")
    x = coloured_noise(n, "pink", MASTER_SEED + index) * np.float32(10 ** (ROOM_NOISE_DBFS / 20))
    x[a: a + word.size] += word
    return x


def brown_noise(n: int, seed: int) -> np.ndarray:
    return 0.1 * coloured_noise(n, "brown", seed)


def pink_noise(n: int, seed: int) -> np.ndarray:
    return 0.08 * coloured_noise(n, "pink", seed)


def mains_hum(n: int, seed: int) -> np.ndarray:
    """50 Hz hum with odd and even harmonics, slight level wobble, over faint white noise."""
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    amps = {1: 1.0, 2: 0.35, 3: 0.5, 4: 0.12, 5: 0.25, 7: 0.12, 9: 0.06}
    hum = sum(a * np.sin(2 * np.pi * 50.0 * k * t + rng.uniform(0, 2 * np.pi)) for k, a in amps.items())
    hum *= 1.0 + 0.05 * np.sin(2 * np.pi * 0.3 * t)
    x = 0.05 * hum / np.max(np.abs(hum)) + 0.002 * rng.standard_normal(n)
    return x.astype(np.float32)


def fan_noise(n: int, seed: int) -> np.ndarray:
    """Fan: low-passed broadband air noise, amplitude-modulated at the blade rate, plus the blade tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec *= 1.0 / (1.0 + (f / 800.0) ** 2)  # second-order-ish roll-off above 800 Hz
    air = np.fft.irfft(spec, n)
    air /= np.sqrt(np.mean(air * air))
    blade_hz = 118.0  # 1180 rpm x 6 blades / 60
    mod = 1.0 + 0.3 * np.sin(2 * np.pi * blade_hz * t)
    tone = 0.3 * np.sin(2 * np.pi * blade_hz * t) + 0.15 * np.sin(2 * np.pi * 2 * blade_hz * t + 1.0)
    x = air * mod + tone
    return (0.06 * x / np.sqrt(np.mean(x * x))).astype(np.float32)


BACKGROUNDS = (("brown_noise", brown_noise), ("pink_noise", pink_noise), ("mains_hum", mains_hum),
               ("fan_noise", fan_noise))


def read_words(path: Path) -> Vocabulary:
    """The commands of a words.toml (``language``, ``[words]`` class -> text); die() naming the file otherwise."""
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
        words = {str(k): str(v) for k, v in doc["words"].items()}
    except FileNotFoundError:
        die(f"{path}: words file not found; give --words FILE with language = \"es\" and a [words] table")
    except (tomllib.TOMLDecodeError, KeyError, AttributeError) as e:
        die(f"{path}: not a words file ({e}); it needs language = \"es\" and a [words] table (CLASS = \"text\")")
    if len(words) < 2:
        die(f"{path}: [words] names {len(words)} command(s); give at least 2")
    return Vocabulary(language=str(doc.get("language", "es")), words=words)


def readme(espeak_version: str, vocab: Vocabulary) -> str:
    folders = vocab.commands
    words = ", ".join(f"{c} ({vocab.words[c]!r})" for c in folders)
    voice = command_voice(vocab.language)
    return f"""# Demo seeds

Generated by `make demo-seeds` (`python -m pipeline.authoring.demo_seeds --out data/demo-seeds`); do not edit by hand.
They let `make all` run without recordings of your own. They are synthetic: a model trained on them
recognises this synthetic voice, not people.

| Folder | Content |
|---|---|
| {", ".join(f"`{w}/`" for w in folders)} | `000_<word>.wav`: the word spoken by espeak-ng, {SEED_LENGTH_S} s, word starting at {WORD_ONSET_S} s, peak {WORD_PEAK}, over pink room noise at {ROOM_NOISE_DBFS:.0f} dBFS |
| `FONDO/` | {", ".join(name for name, _ in BACKGROUNDS)}: {FONDO_LENGTH_S:.0f} s each; `speech_neg_NNN.wav`: about {SPEECH_NEG_MINUTES:g} min of keyword-free speech (language `{vocab.language}`) |

All files: 16 kHz, mono, 16-bit PCM WAV.

## How the words were made

- Synthesiser: `{espeak_version}`
- Command voice: `{voice}`, speed {TRAIN_SPEED_WPM} words/min (`-s`),
  pitch {TRAIN_PITCH} (`-p`), amplitude {TRAIN_AMPLITUDE} (`-a`). This is the ONLY voice of the command
  seeds: a held-out evaluation must use other voices (other variants, speeds, pitches).
- espeak-ng writes 22050 Hz; the audio is resampled to 16 kHz (torchaudio, band-limited), the word is
  located (energy), trimmed, peak-normalised and placed in the room noise.
- Words: {words}.

## Backgrounds (FONDO)

- `brown_noise`: white noise shaped to 1/f² power. `pink_noise`: 1/f power.
- `mains_hum`: 50 Hz with harmonics 2, 3, 4, 5, 7, 9, slow 0.3 Hz level wobble, faint white noise.
- `fan_noise`: low-passed (800 Hz) air noise amplitude-modulated at a 118 Hz blade rate, plus the blade tone
  and its second harmonic.

## Speech negatives (FONDO)

`speech_neg_NNN.wav`: generated sentences, everyday phrases and near-miss words derived from the commands
(`pipeline.audio.texts`) spoken by {len(training_voices(vocab.language))} training-side espeak-ng voices (one per
utterance: the command voice and `pipeline.audio.tts.TRAINING_VARIANTS`) at a few speeds and pitches with short pauses
(`python -m pipeline.authoring.speech_negatives`). Without speech in FONDO the model calls ordinary talk a command.
The texts are disjoint from the held-out evaluation texts (`pipeline.eval.holdout_tts`). Add them to your own
seeds with `python -m pipeline.authoring.speech_negatives --out <seeds>/FONDO`.

All randomness comes from fixed seeds (base {MASTER_SEED}), so the same espeak-ng version gives the same files.

## Using your own recordings

Make a folder with one sub-folder per command word (the folder name is the class name) plus `FONDO/`
with background recordings of any length, one WAV per take (1.4-4 s, the word with a short pause
around it; any sample rate, channels or bit depth), then run `make all SEEDS=path/to/folder`.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole)")
    parser.add_argument("--words", type=Path, default=DEMO_WORDS, help="the commands: a words.toml")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    words_file = args.words
    vocab = read_words(words_file)
    words_text = words_file.read_text(encoding="utf-8")
    exe = espeak_binary()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="espeak-") as work, atomic_dir(args.out) as tmp:
        for i, word in enumerate(vocab.commands):
            try:
                seed = word_seed(speak(vocab.words[word], i, Path(work), exe, command_voice(vocab.language)), i)
            except AudioError as e:
                die(str(e))
            write_wav(tmp / word / f"000_{word.lower()}.wav", seed, SAMPLE_RATE)
        n = int(FONDO_LENGTH_S * SAMPLE_RATE)
        for k, (name, make) in enumerate(BACKGROUNDS):
            write_wav(tmp / BACKGROUND_CLASS / f"{k:03d}_{name}.wav", make(n, MASTER_SEED + 100 + k), SAMPLE_RATE)
        from pipeline.authoring.speech_negatives import write_negatives

        n_speech = len(write_negatives(tmp / BACKGROUND_CLASS, SPEECH_NEG_MINUTES, SPEECH_NEG_FILE_S, vocab))
        atomic_write_text(tmp / "README.md", readme(version, vocab))
        atomic_write_text(tmp / "words.toml", words_text)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"demo seeds: {len(vocab.commands)} words ({command_voice(vocab.language)}) + {len(BACKGROUNDS)} backgrounds + {n_speech} speech negatives in {args.out}/ "
          f"({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
