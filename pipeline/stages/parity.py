"""Stage 4b, parity: the ONNX Runtime vs PyTorch parity report of the exported model.

Inputs: ``kws.onnx`` (pipeline.stages.export), the checkpoint it was exported from and the features folder.
Output: ``onnx_parity.json``: max and mean |Δlogit|, cosine, top-1 agreement on real feature tensors (test
split first), the graph's I/O, opset and operators, the ONNX file's sha256. On a breach (|Δlogit| above
``parity_atol`` or a top-1 difference) it writes ``<report stem>.failed.json`` instead and exits 2: the ONNX file
on disk is not the export of this checkpoint. The export stage applies the same gate before it writes the ONNX
file; this stage is make's record of it (one output per rule) and re-checks a file that exists.

    python -m pipeline.stages.parity --ckpt build/model/ckpt.pt --features build/features \\
        --onnx build/model/kws.onnx --out build/reports/onnx_parity.json
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_write_json
from pipeline.model.runtime import prefer_passive_openmp
from pipeline.stages import export

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    # The parity knobs (parity_samples, parity_atol, opset) are the export stage's parameters.
    p = stage_parser(__doc__.splitlines()[0], export.STAGE)
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint the ONNX file was exported from (ckpt.pt)")
    p.add_argument("--features", type=Path, required=True, help="features folder the model was trained on")
    p.add_argument("--onnx", type=Path, required=True, help="the exported ONNX file (kws.onnx)")
    p.add_argument("--out", type=Path, required=True, help="parity report JSON to write (onnx_parity.json)")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime CPU threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_stage_args(build_parser(), argv, export.STAGE)
    setup_logging(args.verbose)

    prefer_passive_openmp()
    import onnx
    import torch

    from pipeline.audio.features import FeatureSet

    torch.set_num_threads(args.threads)
    ckpt_path, onnx_path, report = Path(args.ckpt), Path(args.onnx), Path(args.out)
    if not onnx_path.is_file():
        die(f"{onnx_path}: no such ONNX file; export it first (make onnx)")
    ckpt = export.load_checkpoint(ckpt_path)
    fs = FeatureSet.open(args.features)
    contract = export.check_contracts(ckpt, ckpt_path, fs.contract, fs.classes, Path(args.features))
    model = export.build_model(ckpt, ckpt_path)
    data = onnx_path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a damaged file
        die(f"{onnx_path}: not a readable ONNX file ({e}); export it again (make onnx)")
    graph_info = export.check_graph(proto, contract.input_shape, len(ckpt["classes"]), onnx_path)
    hyper = {"opset": args.opset, "parity_samples": args.parity_samples, "parity_atol": args.parity_atol}

    rows = export.parity_rows(fs, args.parity_samples)
    x = np.ascontiguousarray(fs.x[[int(r["i"]) for r in rows]], dtype=np.float32)
    stats = export.parity_stats(export.torch_logits(model, x), export.onnx_logits(onnx_path, x, args.threads),
                                args.parity_atol)
    doc = export.parity_document(stats, rows, onnx_path, data, graph_info, ckpt_path, Path(args.features), hyper)
    export.log_parity(stats, args.parity_atol)
    failed = export.failed_report_path(report)
    if not stats["pass"]:
        report.unlink(missing_ok=True)
        atomic_write_json(failed, doc)
        die(f"{onnx_path}: {export.parity_failure(stats, args.parity_atol)}: the file is not the export of {ckpt_path}; "
            f"export it again (make onnx); details in {failed}")
    failed.unlink(missing_ok=True)
    atomic_write_json(report, doc)
    print(f"wrote {report}: parity PASS, max |dlogit| {stats['max_abs']:.3g} on {stats['n']} tensors of {onnx_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
