"""Fixtures for the dataset-stage tests: small seed folders and a runner for the CLI."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.cli import run_main
from pipeline.stages import dataset
from tests.conftest import ROOT, tone_word, write_wav

SMOKE = ROOT / "pipeline" / "params" / "presets" / "smoke.toml"
SMALL = ["--per-class", "5", "--fondo-minutes", "0.1", "--no-progress"]


def make_seeds(root: Path, names: tuple[str, ...] = ("ALFA", "BRAVO", "CHARLIE"), fondo: bool = True) -> Path:
    """Keyword classes with one synthetic 'word' each (different pitch and position), plus FONDO."""
    for i, name in enumerate(names):
        write_wav(root / name / f"000_{name.lower()}.wav",
                  tone_word(dur_s=1.6 + 0.2 * i, word_at_s=0.4 + 0.1 * i, word_s=0.45 + 0.1 * i,
                            f0_hz=150.0 + 90 * i, seed=i))
    if fondo:
        rng = np.random.default_rng(7)
        write_wav(root / "FONDO" / "000_noise.wav", (0.05 * rng.standard_normal(16000 * 3)).astype(np.float32))
        write_wav(root / "FONDO" / "001_hum.wav",
                  (0.05 * np.sin(2 * np.pi * 50 * np.arange(int(16000 * 0.7)) / 16000)).astype(np.float32))
    return root


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    return make_seeds(tmp_path / "seeds")


@pytest.fixture
def one_second(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip stamp of 1 s clips (the tests' seeds and tone words are sized for them; a test may pass another)."""
    path = tmp_path_factory.mktemp("clip") / "clip.json"
    path.write_text(json.dumps({"stage": "clip", "params": {"clip_samples": 16000, "sample_rate": 16000}}))
    return path


@pytest.fixture
def run_dataset(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                one_second: Path) -> Callable[..., tuple[int, str]]:
    """Run ``python -m pipeline.stages.dataset`` in-process (1 s clips); returns (exit status, stderr + log text)."""

    def run(seeds_dir: Path, out: Path, *extra: str, params: Path = SMOKE) -> tuple[int, str]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            rc = run_main(dataset.main, ["--params", str(params), "--seeds", str(seeds_dir), "--out", str(out),
                                         "--clip", str(one_second), *SMALL, *extra])
        err = capsys.readouterr().err
        return rc, err + "\n" + caplog.text

    return run


def wav_hashes(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.wav"))}


@pytest.fixture
def hashes() -> Callable[[Path], dict[str, str]]:
    return wav_hashes
