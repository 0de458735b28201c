"""Board inputs: held-back feature tensors as raw ``input.bin`` folders for ``ax_run_model``.

``<features>/`` -> ``<out>/input/<k>/input.bin`` (raw little-endian float32 (1, 1, 98, 64), exactly 25,088
bytes), ``<out>/list.txt`` (``0\\n1\\n…``, LF only: CRLF broke ax_run_model on the board),
``<out>/labels.csv`` (``k,i,path,class,label``) and ``<out>/manifest.json`` (written last). Only
``split == "test"`` rows are used, class-balanced and deterministic for a ``--seed``; the folder is replaced
as a whole.

    python -m pipeline.stages.npu_inputs --features build/features --out build/npu_inputs
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.audio.features import FeatureSet, balanced_rows
from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_dir, atomic_write_json, atomic_write_text
from pipeline.core.provenance import manifest as provenance_manifest

log = logging.getLogger(__name__)

STAGE = "npu_inputs"


def list_txt(n: int) -> str:
    text = "".join(f"{k}\n" for k in range(n))
    assert "\r" not in text
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser(__doc__.split("\n\n")[0], STAGE)
    parser.add_argument("--features", type=Path, required=True, help="features folder (pipeline.stages.features output)")
    parser.add_argument("--out", type=Path, required=True, help="folder to (re)write")
    args = parse_stage_args(parser, argv, STAGE)
    setup_logging(args.verbose)
    if args.limit < 0:
        die(f"--limit {args.limit}: must be >= 0 (0 = every test clip)")
    fs = FeatureSet.open(args.features)
    test = fs.rows_in("test")
    if not test:
        die(f"{fs.root}: no rows with split == 'test'; raise test_fraction in features.toml or generate more clips")
    count = len(test) if args.limit == 0 else args.limit
    if count > len(test):
        log.warning("--limit %d but only %d test clips: writing %d", args.limit, len(test), len(test))
        count = len(test)
    chosen = balanced_rows(test, len(fs.classes), count, args.seed)
    expected_bytes = fs.contract.input_bytes
    bad = 0
    with atomic_dir(args.out) as tmp:
        for k, r in enumerate(chosen):
            data = np.ascontiguousarray(fs.x[r["i"]], dtype="<f4").tobytes()
            if len(data) != expected_bytes:
                msg = f"{fs.root / 'features.npy'}: row {r['i']} gives {len(data)} bytes, expected {expected_bytes}"
                if args.strict_bin:
                    die(f"{msg}; rebuild the features with the model's features.toml")
                log.warning("%s (written anyway: --no-strict-bin)", msg)
                bad += 1
            d = tmp / "input" / str(k)
            d.mkdir(parents=True)
            (d / "input.bin").write_bytes(data)
        text = list_txt(len(chosen))
        atomic_write_text(tmp / "list.txt", text)
        if b"\r" in (tmp / "list.txt").read_bytes():
            die(f"{args.out / 'list.txt'}: contains CR bytes; ax_run_model needs LF-only line endings")
        buf = io.StringIO(newline="")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["k", "i", "path", "class", "label"])
        for k, r in enumerate(chosen):
            w.writerow([k, r["i"], r["path"], r["class"], r["label"]])
        atomic_write_text(tmp / "labels.csv", buf.getvalue())
        class_counts = {c: sum(r["class"] == c for r in chosen) for c in fs.classes}
        inputs = [fs.root / "manifest.json", fs.root / "index.jsonl"] + ([args.params] if args.params else [])
        man = provenance_manifest(
            STAGE, inputs=inputs, params={"limit": args.limit, "strict_bin": args.strict_bin, "seed": args.seed},
            extra={
                "count": len(chosen),
                "input_bytes": expected_bytes,
                "wrong_size": bad,
                "shape": list(fs.contract.input_shape),
                "dtype": "float32 little-endian",
                "split": "test",
                "classes": fs.classes,
                "class_counts": class_counts,
                "contract": fs.contract.as_dict(),
            },
        )
        atomic_write_json(tmp / "manifest.json", man)
    print(f"wrote {args.out}: {len(chosen)} input.bin of {expected_bytes} bytes, per class {class_counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
