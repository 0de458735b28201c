"""Fixtures for the features / calib / npu-inputs / decode / where tests: a tiny dataset made at test time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.core.cli import run_main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FEATURES_TOML = ROOT / "pipeline" / "params" / "models" / "crnn.toml"  # the CRNN contract: 98 x 64
CLASSES = ["ALFA", "BRAVO", "CHARLIE", "FONDO"]
CLIPS_PER_CLASS = 30


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def synth_clip(class_index: int, item: int, n: int = 16000, sr: int = 16000) -> np.ndarray:
    """1 s: a harmonic 'word' whose pitch depends on the class, in a little noise; FONDO is noise only."""
    rng = np.random.default_rng((7, class_index, item))
    x = 0.01 * rng.standard_normal(n)
    if CLASSES[class_index] != "FONDO":
        t = np.arange(n) / sr
        start = int(rng.integers(2000, 6000))
        env = np.zeros(n)
        env[start : start + 8000] = np.hanning(8000)
        f0 = 150.0 + 80.0 * class_index
        x += 0.3 * env * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))
    return np.clip(x, -1, 1).astype(np.float32)


def make_dataset(root: Path, per_class: int = CLIPS_PER_CLASS) -> Path:
    """A dataset folder as pipeline.stages.dataset writes it: <CLASS>/<class>_NNNNN.wav, clips.jsonl, manifest.json."""
    lines = []
    for ci, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            rel = f"{name}/{name.lower()}_{k:05d}.wav"
            sf.write(str(root / rel), synth_clip(ci, k), 16000, subtype="PCM_16")
            lines.append(json.dumps({"path": rel, "class": name, "source": f"{name}/000.wav", "params": {"k": k}}))
    (root / "clips.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = {"stage": "dataset", "classes": CLASSES, "background_class": "FONDO",
                "counts": {c: per_class for c in CLASSES}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def run_features(dataset: Path, out: Path, *extra: str) -> int:
    return run_main(__import__("pipeline.stages.features", fromlist=["main"]).main,
                    ["--params", str(DEFAULT_FEATURES_TOML), "--dataset", str(dataset), "--out", str(out),
                     "--no-progress", *extra])


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BUILD folder with dataset/ and features/ (default contract, val 0.1, test 0.2)."""
    torch.set_num_threads(1)
    build = tmp_path_factory.mktemp("build")
    make_dataset(build / "dataset")
    assert run_features(build / "dataset", build / "features", "--test-fraction", "0.2") == 0
    return build
