"""The INT8 model inside an EMULATED axmodel, as a plain ONNX file the host tools can score.

The Pulsar2 EMULATOR's axmodel carries the quantized (QDQ INT8) ONNX it would run on the board emulator.
This writes that ONNX next to it with the FP32 model's metadata (classes, feature contract, model config)
and ``scored`` / ``EMULATED`` entries, so ``pipeline.eval.evaluate`` scores the NPU path on the holdout
without knowing about axmodels. A real axmodel is refused: it runs only on the board.

    python -m pulsar2.int8_onnx --axmodel build/pulsar2/output/compiled.axmodel --onnx build/model/kws.onnx \\
        --out build/pulsar2/output/emulated_int8.onnx
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.io import atomic_write_bytes, sha256_file
from pulsar2 import axmodel

SCORED_KEY = "scored"


def int8_onnx_bytes(axmodel_path: Path, fp32_onnx: Path) -> bytes:
    """The INT8 ONNX of an emulated axmodel built from ``fp32_onnx``, carrying that model's metadata."""
    import onnx

    try:
        meta, qbytes = axmodel.read_emulated(axmodel_path)
    except FileNotFoundError:
        die(f"{axmodel_path}: axmodel not found; build it with `make axmodel`")
    except axmodel.NotEmulatedAxmodel as e:
        die(f"{e}; a real axmodel runs only on the board (`invoke eval-npu`)")
    if meta.get("source_onnx_sha256") and meta["source_onnx_sha256"] != sha256_file(fp32_onnx):
        die(f"{axmodel_path}: built from a different ONNX than {fp32_onnx} (sha256 differs); rebuild with `make axmodel`")
    fp32 = onnx.load(str(fp32_onnx), load_external_data=False)
    q = onnx.load_from_string(qbytes)
    q_io = (q.graph.input[0].name, q.graph.output[0].name)
    fp32_io = (fp32.graph.input[0].name, fp32.graph.output[0].name)
    if q_io != fp32_io:
        die(f"{axmodel_path}: input/output {q_io} differ from {fp32_onnx}'s {fp32_io}; rebuild with `make axmodel`")
    props = {p.key: p.value for p in fp32.metadata_props}
    props[SCORED_KEY] = f"EMULATED INT8 (pulsar2 emulator) from {axmodel_path}"
    props["EMULATED"] = json.dumps(True)
    del q.metadata_props[:]
    for key, value in props.items():
        q.metadata_props.add(key=key, value=value)
    return q.SerializeToString()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--axmodel", type=Path, required=True, help="EMULATED compiled.axmodel (pulsar2.build)")
    p.add_argument("--onnx", type=Path, required=True, help="the FP32 ONNX it was built from (classes, contract)")
    p.add_argument("--out", type=Path, required=True, help="INT8 ONNX file to write")
    args = p.parse_args(argv)
    setup_logging()
    atomic_write_bytes(args.out, int8_onnx_bytes(args.axmodel, args.onnx))
    print(f"wrote {args.out}: the EMULATED INT8 model of {args.axmodel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
