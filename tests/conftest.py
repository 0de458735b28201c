"""Shared fixtures: synthetic audio made at test time (nothing is downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# The seed's CRNN family's parameters (contract, training): the tests of the CRNN path use them.
CRNN_PARAMS = ROOT / "pipeline" / "params" / "models" / "crnn.toml"


def crnn_contract():  # type: ignore[no-untyped-def]
    """The CRNN's feature contract (64 HTK mels, 0-8 kHz): 98 x 64 inputs, 25,088 bytes each."""
    from pipeline.audio.features import load_contract

    return load_contract(CRNN_PARAMS)


def write_wav(path: Path, audio: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype=subtype)
    return path


def tone_word(sr: int = 16000, dur_s: float = 2.0, word_at_s: float = 0.7, word_s: float = 0.5,
              f0_hz: float = 220.0, seed: int = 0) -> np.ndarray:
    """A 'word' (harmonic burst with an envelope) inside quiet noise: stands in for a spoken command."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * dur_s)) / sr
    x = 0.003 * rng.standard_normal(t.size)
    a, b = int(word_at_s * sr), int((word_at_s + word_s) * sr)
    tw = t[: b - a]
    env = np.sin(np.pi * np.arange(b - a) / (b - a)) ** 2
    burst = sum(np.sin(2 * np.pi * f0_hz * k * tw * (1 + 0.1 * tw)) / k for k in range(1, 6))
    x[a:b] += 0.3 * env * burst
    return x.astype(np.float32)


@pytest.fixture
def synthetic_seeds(tmp_path: Path) -> Path:
    """A seeds folder: 3 keyword classes with one 'word' each, and FONDO with two noise files."""
    root = tmp_path / "seeds"
    for i, name in enumerate(["ALFA", "BRAVO", "CHARLIE"]):
        write_wav(root / name / f"000_{name.lower()}.wav", tone_word(f0_hz=150.0 + 90 * i, seed=i))
    rng = np.random.default_rng(42)
    write_wav(root / "FONDO" / "000_noise.wav", (0.05 * rng.standard_normal(16000 * 4)).astype(np.float32))
    write_wav(root / "FONDO" / "001_hum.wav",
              (0.05 * np.sin(2 * np.pi * 50 * np.arange(16000 * 3) / 16000)).astype(np.float32))
    return root


def require_tool(name: str, how: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: {how}")
    return path
