"""Pulsar2 calibration set: ``num_samples`` class-balanced training feature tensors in a tar ("Numpy" format).

``<features>/`` (features.npy, index.jsonl, manifest.json) -> ``<out>`` (a tar of flat ``input_00000.npy`` …,
each float32 (1, 1, 98, 64) in np.save format, byte-identical for the same inputs and seed) and
``<out dir>/manifest.json`` (which feature rows were chosen). Only ``split == "train"`` rows are used.

    python -m pipeline.stages.calib --features build/features --out build/calib/calib_kws.tar
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.features import FeatureSet, balanced_rows
from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_write_bytes, atomic_write_json, sha256_bytes
from pipeline.core.provenance import manifest as provenance_manifest

log = logging.getLogger(__name__)

STAGE = "calib"
MEMBER_FORMAT = "input_{:05d}.npy"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def deterministic_tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A ustar archive of (name, data) in name order with fixed metadata (mtime 0, uid/gid 0, mode 0644)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.type = len(data), 0, 0o644, tarfile.REGTYPE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def choose(fs: FeatureSet, num_samples: int, seed: int) -> list[dict[str, Any]]:
    """``num_samples`` class-balanced ``train`` rows; refuses a request larger than the training split."""
    train = fs.rows_in("train")
    if num_samples > len(train):
        die(f"{fs.root}: calibration asks for num_samples={num_samples} but the features hold only {len(train)} "
            f"training clips (of {len(fs)}); lower num_samples in calib.toml (or --num-samples) to at most "
            f"{len(train)}, or generate more clips per class (dataset.toml per_class)")
    chosen = balanced_rows(train, len(fs.classes), num_samples, seed)
    counts = Counter(r["class"] for r in chosen)
    if len(counts) < len(fs.classes):
        log.warning("calibration set lacks classes %s (no training clips)", sorted(set(fs.classes) - set(counts)))
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser(__doc__.split("\n\n")[0], STAGE)
    parser.add_argument("--features", type=Path, required=True, help="features folder (pipeline.stages.features output)")
    parser.add_argument("--out", type=Path, required=True, help="calibration tar to write (manifest.json goes beside it)")
    args = parse_stage_args(parser, argv, STAGE)
    setup_logging(args.verbose)
    if args.num_samples < 1 or args.num_samples > 99999:
        die(f"--num-samples {args.num_samples}: must be 1..99999 (member names have 5 digits)")
    fs = FeatureSet.open(args.features)
    chosen = choose(fs, args.num_samples, args.seed)
    members = []
    for k, r in enumerate(chosen):
        x = np.asarray(fs.x[r["i"]], dtype=np.float32).reshape(fs.contract.input_shape)
        if not np.all(np.isfinite(x)):
            die(f"{fs.root / 'features.npy'}: row {r['i']} ({r['path']}) holds NaN/inf; rebuild the features")
        members.append((MEMBER_FORMAT.format(k), npy_bytes(x)))
    data = deterministic_tar(members)
    inputs = [fs.root / "manifest.json", fs.root / "index.jsonl"] + ([args.params] if args.params else [])
    man = provenance_manifest(
        STAGE, inputs=inputs, params={"num_samples": args.num_samples, "seed": args.seed},
        extra={
            "tar": args.out.name,
            "tar_sha256": sha256_bytes(data),
            "count": len(chosen),
            "shape": list(fs.contract.input_shape),
            "dtype": "float32",
            "split": "train",
            "classes": fs.classes,
            "class_counts": {c: sum(r["class"] == c for r in chosen) for c in fs.classes},
            "contract": fs.contract.as_dict(),
            "chosen": [{"member": m[0], "i": r["i"], "path": r["path"], "class": r["class"]}
                       for m, r in zip(members, chosen)],
        },
    )
    # The tar is the make target, so it is renamed into place last: a crash before that leaves no tar that
    # looks newer than its inputs.
    atomic_write_json(args.out.parent / "manifest.json", man)
    atomic_write_bytes(args.out, data)
    print(f"wrote {args.out}: {len(chosen)} tensors float32 {fs.contract.input_shape}, "
          f"per class {man['class_counts']}, sha256 {man['tar_sha256'][:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
