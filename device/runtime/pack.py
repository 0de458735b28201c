"""What the board runtime needs besides the axmodel: classes, feature contract, mel filterbank, detector settings.

Inputs -> outputs: the exported ONNX model (its metadata: classes, contract) and the detector settings
``make detector`` calibrated for it -> ``<out>/runtime.json`` + ``<out>/mel_fb.npy`` (the filterbank torchaudio
builds for the contract, so the board's numpy front end needs no torch). The deploy bundle adds the
runtime's code (device/runtime/{listen,frontend,engine}.py and pipeline/core/detector.py).

    python -m device.runtime.pack --onnx build/model/kws.onnx --settings build/detector/settings.json --out build/runtime
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.detector import DetectorSettings
from pipeline.core.io import atomic_dir, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

# The files of device/runtime and pipeline/core that run on the board, by their name in the bundle.
ROOT = Path(__file__).resolve().parents[2]
CODE = {
    "listen.py": ROOT / "device" / "runtime" / "listen.py",
    "frontend.py": ROOT / "device" / "runtime" / "frontend.py",
    "engine.py": ROOT / "device" / "runtime" / "engine.py",
    "detector.py": ROOT / "pipeline" / "core" / "detector.py",
}
MEL_FB = "mel_fb.npy"


def pack(onnx: Path, settings_path: Path, out: Path) -> dict:
    from pipeline.audio.features import _kernels
    from pipeline.model.infer import OnnxModel

    model = OnnxModel(onnx)
    doc = json.loads(settings_path.read_text(encoding="utf-8"))
    onnx_sha = sha256_file(onnx)
    if doc.get("model_sha256") != onnx_sha:
        die(f"{settings_path}: calibrated for another model (sha256 {str(doc.get('model_sha256'))[:12]}, "
            f"{onnx} is {onnx_sha[:12]}); rerun `make detector`")
    try:
        settings = DetectorSettings.from_mapping(doc["settings"])
    except (KeyError, TypeError, ValueError) as e:
        die(f"{settings_path}: no valid detector settings ({e}); rerun `make detector`")
    fb = _kernels(model.contract)[1].numpy().astype(np.float32)
    fa = doc.get("calibration", {}).get("fa_per_hour")
    rate = f"{fa:.2f}" if isinstance(fa, (int, float)) else "?"
    spec = {
        "classes": model.classes, "contract": model.contract.as_dict(), "detector": settings.as_dict(),
        "detector_source": f"calibrated by make detector ({rate} FA/h on the development set)",
        "model_onnx_sha256": onnx_sha, "mel_fb": MEL_FB,
    }
    with atomic_dir(out) as tmp:
        np.save(tmp / MEL_FB, fb, allow_pickle=False)
        atomic_write_json(tmp / "runtime.json", spec)
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--settings", type=Path, required=True, help="detector settings of make detector")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    setup_logging()
    spec = pack(args.onnx, args.settings, args.out)
    d = spec["detector"]
    print(f"wrote {args.out}: {len(spec['classes'])} classes, detector smooth {d['smooth_windows']}, "
          f"consecutive {d['min_consecutive_windows']}, on {d['on_threshold']}"
          + "".join(f", {c} {t}" for c, t in sorted(d.get("class_on_thresholds", {}).items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
