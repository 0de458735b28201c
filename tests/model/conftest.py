"""Fixtures for the model tests: a tiny packed feature set made at test time (design.md format)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.contract import FeatureContract
from tests.conftest import crnn_contract

CLASSES = ("ALFA", "BRAVO", "CHARLIE", "FONDO")


def split_of(k: int) -> str:
    """Every 10 rows: 6 train, 2 val, 2 test (deterministic, like the real hash split in spirit)."""
    r = k % 10
    return "train" if r < 6 else ("val" if r < 8 else "test")


def write_feature_set(root: Path, per_class: int = 30, classes: Sequence[str] = CLASSES, seed: int = 0,
                      contract: FeatureContract | None = None) -> Path:
    """features.npy/index.jsonl/manifest.json whose classes are separable: class k lights mel band k."""
    contract = contract or crnn_contract()
    rng = np.random.default_rng(seed)
    n = per_class * len(classes)
    x = rng.normal(0.0, 0.5, size=(n, 1, contract.n_frames, contract.n_mels)).astype(np.float32)
    band = contract.n_mels // len(classes)
    rows = []
    for i in range(n):
        label = i % len(classes)
        t0 = int(rng.integers(0, contract.n_frames // 2))
        x[i, 0, t0:t0 + contract.n_frames // 3, label * band:(label + 1) * band] += 2.0
        rows.append({"i": i, "path": f"{classes[label]}/{classes[label].lower()}_{i:05d}.wav",
                     "class": classes[label], "label": label, "split": split_of(i // len(classes))})
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "features.npy", x)
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    (root / "manifest.json").write_text(json.dumps({
        "stage": "features", "contract": contract.as_dict(), "classes": list(classes), "counts": counts,
    }), encoding="utf-8")
    return root


@pytest.fixture
def make_features(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "features", **kw) -> Path:
        return write_feature_set(tmp_path / name, **kw)
    return make


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)
