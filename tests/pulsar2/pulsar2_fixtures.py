"""Helpers for the Pulsar2 tests: a tiny trained ONNX classifier, calibration tars and a features folder.

Everything is made here (nothing downloaded); the model is trained for a few steps on separable data so that
INT8 quantization has something real to preserve.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import crnn_contract

SHAPE = (1, 1, 98, 64)
N_CLASSES = 4
CLASSES = ["ALFA", "BRAVO", "CHARLIE", "FONDO"]


def toy_features(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n, 1, 98, 64): class k has a band of energy in mel bins [16k, 16k+12) plus noise."""
    rng = np.random.default_rng([seed, 0, 0])
    xs, ys = [], []
    for k in range(N_CLASSES):
        x = rng.normal(0.0, 0.5, size=(n_per_class, *SHAPE[1:])).astype(np.float32)
        x[:, :, 20:80, 16 * k:16 * k + 12] += 2.0
        xs.append(x)
        ys += [k] * n_per_class
    return np.concatenate(xs), np.asarray(ys)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def calib_tar(path: Path, arrays: list[np.ndarray]) -> Path:
    return write_tar(path, {f"input_{i:05d}.npy": npy_bytes(a) for i, a in enumerate(arrays)})


def export_toy_onnx(path: Path, input_name: str = "input", output_name: str = "output", seed: int = 0) -> Path:
    """Train Conv/BN/ReLU/MaxPool -> Linear on toy_features for a few steps and export opset 13 (static batch 1)."""
    import onnx
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d((2, 4)), torch.nn.Flatten(), torch.nn.Linear(64, N_CLASSES),
    )
    x, y = toy_features(24, seed=seed + 1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    # Plain SGD with momentum by hand: any torch.optim optimizer imports torch._dynamo (~10 s on a busy machine).
    params = list(model.parameters())
    velocity = [torch.zeros_like(param) for param in params]
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(30):
        idx = torch.randint(0, len(xt), (16,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param, v in zip(params, velocity):
                v.mul_(0.9).add_(param.grad)
                param.sub_(0.05 * v)
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is what pipeline.stages.export uses too
        torch.onnx.export(model, torch.zeros(SHAPE), str(path), input_names=[input_name], output_names=[output_name],
                          opset_version=13, dynamo=False)
    m = onnx.load(str(path))
    for key, value in (("classes", json.dumps(CLASSES)), ("contract", crnn_contract().to_json())):
        p = m.metadata_props.add()
        p.key, p.value = key, value
    onnx.save(m, str(path))
    return path


def write_features(root: Path, n_per_class: int = 10, seed: int = 11) -> Path:
    """A features folder in the design.md format: half 'train', half 'test' rows per class."""
    x, y = toy_features(n_per_class, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "features.npy", x)
    rows: list[dict[str, Any]] = []
    for i, label in enumerate(y):
        split = "test" if i % 2 else "train"
        rows.append({"i": i, "path": f"{CLASSES[label]}/{i:05d}.wav", "class": CLASSES[label], "label": int(label), "split": split})
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    manifest = {"stage": "features", "classes": CLASSES, "contract": crnn_contract().as_dict(),
                "splits": {"train": sum(r["split"] == "train" for r in rows), "test": sum(r["split"] == "test" for r in rows)}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root
