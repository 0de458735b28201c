"""Fixtures for the evaluation tests: a tiny ONNX model whose behaviour is known by construction.

The model (classes ALFA, BRAVO, FONDO) takes the maximum over time of each mel band of the contract's
log-Mel input; ALFA's logit is 4x the mean of the bands around 300 Hz, BRAVO's of the bands around
2 kHz, FONDO's a constant 4. So a 300 Hz tone is ALFA, a 2 kHz tone BRAVO, quiet noise FONDO.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import crnn_contract, write_wav

SR = 16000
CLASSES = ["ALFA", "BRAVO", "FONDO"]
TONE_HZ = {"ALFA": 300.0, "BRAVO": 2000.0}


def tone(freq_hz: float, dur_s: float, at_s: float, tone_s: float = 0.5, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """Quiet noise of ``dur_s`` with a tone of ``tone_s`` starting at ``at_s``."""
    rng = np.random.default_rng(seed)
    x = 0.003 * rng.standard_normal(int(dur_s * SR))
    a, b = int(at_s * SR), int((at_s + tone_s) * SR)
    t = np.arange(b - a) / SR
    x[a:b] += amp * np.sin(2 * np.pi * freq_hz * t)
    return x.astype(np.float32)


def quiet_noise(dur_s: float, seed: int = 0) -> np.ndarray:
    return (0.003 * np.random.default_rng(seed).standard_normal(int(dur_s * SR))).astype(np.float32)


def export_tiny_onnx(path: Path, classes: list[str] = CLASSES, frames: tuple[int, int] = (0, 98)) -> Path:
    """The tiny model; ``frames`` limits what it looks at to those frames of the window (a model that only
    knows words in the middle of its window is position-sensitive, like a CRNN trained on centred words)."""
    import onnx
    import torch


    torch.set_num_threads(1)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64, len(classes))
            w = torch.zeros(len(classes), 64)
            w[0, 6:11] = 4.0 / 5
            w[1, 32:37] = 4.0 / 5
            with torch.no_grad():
                self.fc.weight.copy_(w)
                self.fc.bias.copy_(torch.tensor([0.0, 0.0, 4.0]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.amax(x[:, :, frames[0]:frames[1]], dim=2).flatten(1))

    contract = crnn_contract()
    torch.onnx.export(Tiny().eval(), (torch.zeros(contract.input_shape),), str(path), opset_version=13,
                      input_names=["input"], output_names=["output"], dynamo=False)
    m = onnx.load(str(path))
    for k, v in {"classes": json.dumps(classes), "contract": contract.to_json(),
                 "provenance": json.dumps({"made_by": "tests/eval"})}.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("model") / "kws.onnx")


@pytest.fixture
def tiny_holdout(tmp_path: Path) -> Path:
    """4 ALFA + 3 BRAVO tone clips (one BRAVO file is really an ALFA tone), 3 FONDO files of quiet noise
    (30 s in all, one holding an ALFA tone: exactly one false accept expected), and a manifest with SNR/voice."""
    root = tmp_path / "holdout"
    files = []
    for i in range(4):
        write_wav(root / "ALFA" / f"a{i}.wav", tone(300.0, 1.5, 0.4 + 0.1 * i, seed=i))
        files.append({"path": f"ALFA/a{i}.wav", "voice": "test+v1" if i % 2 else "test+v2",
                      "snr_db": None if i < 2 else 10.0})
    for i in range(2):
        write_wav(root / "BRAVO" / f"b{i}.wav", tone(2000.0, 1.2, 0.3, seed=10 + i))
        files.append({"path": f"BRAVO/b{i}.wav", "voice": "test+v1", "snr_db": None})
    write_wav(root / "BRAVO" / "b_wrong.wav", tone(300.0, 1.2, 0.3, seed=20))
    files.append({"path": "BRAVO/b_wrong.wav", "voice": "test+v2", "snr_db": 10.0})
    write_wav(root / "FONDO" / "n0.wav", quiet_noise(10.0, seed=30))
    write_wav(root / "FONDO" / "n1.wav", quiet_noise(8.0, seed=31))
    with_word = quiet_noise(12.0, seed=32)
    with_word[5 * SR: 5 * SR + 8000] += tone(300.0, 0.5, 0.0, seed=33)
    write_wav(root / "FONDO" / "n2.wav", with_word)
    (root / "manifest.json").write_text(json.dumps({"files": files}), encoding="utf-8")
    return root
