"""Build-time smoke tests of the images (run by the Dockerfiles; also runnable on a host).

    python3 docker/smoke.py train     # imports + a MelSpectrogram on the CPU
    python3 docker/smoke.py board     # numpy + onnxruntime import, a CPU session provider exists
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

TRAIN_MODULES = ("torch", "torchaudio", "numpy", "onnx", "onnxruntime", "soundfile", "jsonschema", "matplotlib", "tqdm")
BOARD_MODULES = ("numpy", "onnxruntime")


def _versions(modules: Sequence[str]) -> str:
    for m in modules:
        importlib.import_module(m)
    return " ".join(f"{m}={importlib.metadata.version(m)}" for m in modules)


def smoke_train() -> str:
    import torch
    import torchaudio

    torch.set_num_threads(1)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
                                               n_mels=64, center=False)
    t = torch.arange(16000 + 112, dtype=torch.float32) / 16000
    spec = mel(torch.sin(2 * torch.pi * 440.0 * t))
    if tuple(spec.shape) != (64, 98) or not bool(torch.isfinite(spec).all()):
        raise SystemExit(f"smoke: MelSpectrogram gave shape {tuple(spec.shape)}, expected (64, 98) and finite")
    return f"{_versions(TRAIN_MODULES)} melspec=(64, 98) ok"


def smoke_board() -> str:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CPUExecutionProvider" not in providers:
        raise SystemExit(f"smoke: onnxruntime has no CPUExecutionProvider ({providers})")
    return f"{_versions(BOARD_MODULES)} providers={providers}"


def main(argv: Sequence[str] | None = None) -> int:
    which = (argv if argv is not None else sys.argv[1:]) or ["train"]
    checks = {"train": smoke_train, "board": smoke_board}
    if which[0] not in checks:
        print(f"error: smoke.py: unknown image {which[0]!r}; expected one of {sorted(checks)}", file=sys.stderr)
        return 2
    print(f"smoke {which[0]}: {checks[which[0]]()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
