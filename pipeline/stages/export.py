"""Stage 4, export: the trained model to ONNX, gated on ONNX Runtime vs PyTorch parity.

Inputs: ``ckpt.pt`` (pipeline.stages.train) and the features folder it was trained on (for real input tensors and
the contract check). Output: ``kws.onnx`` (opset from the params, input ``input`` float32 in the contract's shape,
output ``output`` float32[1,n_classes] logits, static shapes, metadata_props ``classes``, ``contract``,
``model_config``, ``family``, ``provenance``). The ONNX file is built in a temporary file and moved into place
only after ``onnx.checker`` and the parity gate pass; on a breach no ``kws.onnx`` is left and the exit status
is 2. ``--report`` also writes the parity report (``<report stem>.failed.json`` on a breach); make writes it
with ``pipeline.stages.parity``, its own target.

The legacy (TorchScript) exporter sizes the RNN's initial state with Shape/Gather/Concat/Expand even for a
static batch; :func:`fold_static_shapes` folds such shape arithmetic into constants so the graph has no
dynamic-shape ops (the Pulsar2 compiler wants a static graph).

Example::

    python -m pipeline.stages.export --ckpt build/model/ckpt.pt --features build/features --out build/model/kws.onnx
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.contract import ContractMismatch, FeatureContract
from pipeline.core.io import atomic_write_json, sha256_bytes
from pipeline.core.provenance import manifest, resources
from pipeline.model.runtime import prefer_passive_openmp

log = logging.getLogger(__name__)

STAGE = "export"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
CKPT_KEYS = ("state_dict", "model_config", "classes", "contract")
PARITY_SPLITS = ("test", "val", "train")
# Shape arithmetic that may be folded into constants when every input is known.
FOLDABLE_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Expand", "Slice", "Cast", "Transpose",
                          "Identity", "ConstantOfShape", "Reshape"})
# Ops that must not survive in the exported graph: they make shapes data-dependent.
DYNAMIC_SHAPE_OPS = frozenset({"Shape", "Size", "Expand", "ConstantOfShape", "NonZero", "Range", "Loop", "If"})
# Ops the seed's CRNN compiled with on Pulsar2 4.2 (plus LSTM, Slice, Squeeze/Unsqueeze and Concat) and the
# embedding family's (LeakyRelu, Clip, Max, Pad: on the AX620E operator list, pulsar2/README.md); anything else is
# reported as a warning so an unsupported op is seen before the Pulsar2 build.
EXPECTED_OPS = frozenset({"Conv", "Relu", "LeakyRelu", "Clip", "Max", "Pad", "MaxPool", "Transpose", "Reshape", "GRU", "LSTM",
                          "Gather", "Slice", "Concat", "Squeeze", "Unsqueeze", "Gemm", "MatMul", "Add", "Constant",
                          "Flatten"})


# ---- checkpoint ---------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read ``ckpt.pt`` (weights_only) and check it has what export needs."""
    import torch

    if not path.is_file():
        die(f"{path}: checkpoint not found; train first (make train / python -m pipeline.stages.train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as e:  # corrupt/foreign file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        die(f"{path}: not a readable pipeline.stages.train checkpoint ({type(e).__name__}: {first}); re-run pipeline.stages.train")
    if not isinstance(ckpt, dict):
        die(f"{path}: not a pipeline.stages.train checkpoint (a {type(ckpt).__name__}, not a dict); re-run pipeline.stages.train")
    missing = [k for k in CKPT_KEYS if k not in ckpt]
    if missing:
        die(f"{path}: checkpoint lacks {missing}; re-run pipeline.stages.train")
    return ckpt


def check_contracts(ckpt: dict[str, Any], ckpt_path: Path, features_contract: FeatureContract,
                    features_classes: Sequence[str], features_dir: Path) -> FeatureContract:
    """The checkpoint's contract and classes must equal the features'; the error names both files and the fix."""
    man = features_dir / "manifest.json"
    fix = (f"retrain on these features (python -m pipeline.stages.train --features {features_dir}) or pass the features "
           "folder the checkpoint was trained on")
    try:
        ckpt_contract = FeatureContract.from_mapping(ckpt["contract"])
        ckpt_contract.check_compatible(features_contract, what=f"checkpoint {ckpt_path}")
    except ContractMismatch as e:
        die(f"{ckpt_path}: feature contract does not match {man}: {e}; {fix}")
    if list(ckpt["classes"]) != list(features_classes):
        die(f"{ckpt_path}: classes {list(ckpt['classes'])} differ from {man} {list(features_classes)}; {fix}")
    return ckpt_contract


def build_model(ckpt: dict[str, Any], ckpt_path: Path) -> Any:
    """The whole model of a checkpoint, in eval mode: a CRNN, or the frozen speech embedding + the trained head."""
    family = ckpt.get("family", "crnn")
    if family == "crnn":
        from pipeline.model.crnn import CRNN, ModelConfig

        model = CRNN(ModelConfig.from_mapping(ckpt["model_config"]))
        model.load_state_dict(ckpt["state_dict"])
    elif family == "embedding":
        from pipeline.model.embedding import EmbeddingConfig, EmbeddingError, EmbeddingKWS

        try:
            model = EmbeddingKWS(EmbeddingConfig.from_mapping(ckpt["model_config"]))
        except (ValueError, EmbeddingError) as e:
            die(f"{ckpt_path}: {e}")
        model.head.load_state_dict(ckpt["state_dict"])
    else:
        die(f"{ckpt_path}: unknown model family {family!r}; re-run pipeline.stages.train")
    model.eval()
    return model


# ---- ONNX ---------------------------------------------------------------------------------------


def torch_to_onnx(model: Any, input_shape: Sequence[int], opset: int) -> Any:
    """Legacy TorchScript export, eval mode, static shapes, named I/O; returns the onnx.ModelProto."""
    import onnx
    import torch

    dummy = torch.zeros(*input_shape, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="kws-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(
                model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, dynamo=False, do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL, dynamic_axes=None,
            )
        for w in caught:
            log.debug("torch.onnx.export: %s", w.message)
        return onnx.load(str(path))


def _constant_value(node: Any) -> np.ndarray | None:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
    return None


def fold_static_shapes(model: Any) -> tuple[Any, int]:
    """Fold shape arithmetic on statically-shaped tensors into initializers, repeatedly (a fold can make
    more shapes static) until nothing folds; returns (model, nodes folded)."""
    total = 0
    while True:
        model, n = _fold_once(model)
        total += n
        if n == 0:
            return model, total


def _fold_once(model: Any) -> tuple[Any, int]:
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    inferred = onnx.shape_inference.infer_shapes(model)
    static: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            static[vi.name] = [d.dim_value for d in tt.shape.dim]
    g = model.graph
    const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and (value := _constant_value(node)) is not None:
            const[node.output[0]] = value
    folded: set[int] = set()
    new_values: dict[str, np.ndarray] = {}
    for k, node in enumerate(g.node):
        if node.op_type == "Shape" and not node.attribute and node.input[0] in static:
            values = [np.array(static[node.input[0]], dtype=np.int64)]
        elif node.op_type in FOLDABLE_OPS and node.input and all(i == "" or i in const for i in node.input):
            feeds = {i: const[i] for i in node.input if i}
            values = ReferenceEvaluator(node, opsets={"": opset} if opset else None).run(None, feeds)
        else:
            continue
        for name, value in zip(node.output, values):
            const[name] = new_values[name] = np.asarray(value)
        folded.add(k)
    if not folded:
        return model, 0
    kept = [n for k, n in enumerate(g.node) if k not in folded]
    # Drop Constant nodes that only fed folded nodes.
    while True:
        used = {i for n in kept for i in n.input} | {o.name for o in g.output}
        dead = [n for n in kept if n.op_type == "Constant" and not any(o in used for o in n.output)]
        if not dead:
            break
        kept = [n for n in kept if n not in dead]
    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    initializers = [i for i in g.initializer if i.name in used]
    initializers += [numpy_helper.from_array(v, name) for name, v in new_values.items() if name in used]
    del g.node[:]
    g.node.extend(kept)
    del g.initializer[:]
    g.initializer.extend(initializers)
    # value_info of folded tensors would now describe initializers; let inference rebuild it.
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model), len(folded)


def static_dims(value_info: Any) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim]


def check_graph(model: Any, input_shape: Sequence[int], n_classes: int, where: Path) -> dict[str, Any]:
    """I/O names, static shapes, no dynamic-shape ops; returns a description for the report."""
    g = model.graph
    inputs = [i for i in g.input if i.name not in {x.name for x in g.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in g.output] != [OUTPUT_NAME]:
        die(f"{where}: exported I/O are {[i.name for i in inputs]} -> {[o.name for o in g.output]}, expected "
            f"['{INPUT_NAME}'] -> ['{OUTPUT_NAME}']; this is a bug in pipeline.stages.export")
    in_dims, out_dims = static_dims(inputs[0]), static_dims(g.output[0])
    if in_dims != list(input_shape) or out_dims != [1, n_classes]:
        die(f"{where}: exported shapes {in_dims} -> {out_dims}, expected {list(input_shape)} -> [1, {n_classes}]; "
            "this is a bug in pipeline.stages.export")
    ops = Counter(n.op_type for n in g.node)
    dynamic = sorted(set(ops) & DYNAMIC_SHAPE_OPS)
    if dynamic:
        die(f"{where}: dynamic-shape ops {dynamic} remain after folding; the Pulsar2 compiler needs a static graph "
            "(change pipeline/model/crnn.py so the traced graph has static shapes)")
    unexpected = sorted(set(ops) - EXPECTED_OPS)
    if unexpected:
        log.warning("ONNX ops %s are outside the set the seed CRNN compiled with on Pulsar2 4.2; check "
                    "docs (PULSAR2_NOTES) before the Pulsar2 build", unexpected)
    return {
        "input": {"name": INPUT_NAME, "shape": in_dims, "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": out_dims, "dtype": "float32"},
        "op_types": dict(sorted(ops.items())),
        "ops_outside_expected": unexpected,
    }


def set_metadata(model: Any, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = key, value


# ---- parity -------------------------------------------------------------------------------------


def parity_rows(fs: Any, n: int) -> list[dict[str, Any]]:
    """Up to n rows: the test split first, then val, then train (index order within a split)."""
    rows: list[dict[str, Any]] = []
    for split in PARITY_SPLITS:
        rows += sorted(fs.rows_in(split), key=lambda r: int(r["i"]))[: n - len(rows)]
        if len(rows) >= n:
            break
    return rows


def torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """PyTorch logits, one tensor at a time (the same batch-1 shape the ONNX file has)."""
    import torch

    out = np.empty((len(x), model.config.n_classes), dtype=np.float32)
    with torch.no_grad():
        for k in range(len(x)):
            out[k] = model(torch.from_numpy(np.ascontiguousarray(x[k:k + 1]))).numpy()[0]
    return out


def onnx_logits(onnx_path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    from pipeline.model.infer import OnnxModel

    return OnnxModel(onnx_path, intra_op_threads=threads).logits(x)


def parity_stats(ref: np.ndarray, got: np.ndarray, atol: float) -> dict[str, Any]:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    num = np.sum(ref.astype(np.float64) * got, axis=1)
    den = np.linalg.norm(ref.astype(np.float64), axis=1) * np.linalg.norm(got.astype(np.float64), axis=1)
    cosine = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    top1 = ref.argmax(1) == got.argmax(1)
    max_abs = float(diff.max()) if diff.size else float("nan")
    n = len(ref)
    return {
        "n": n,
        "max_abs": max_abs,
        "mean_abs": float(diff.mean()) if diff.size else float("nan"),
        "cosine_min": float(cosine.min()) if n else float("nan"),
        "cosine_mean": float(cosine.mean()) if n else float("nan"),
        "top1_agreement": float(top1.mean()) if n else float("nan"),
        "top1_disagreements": int((~top1).sum()),
        "atol": atol,
        "pass": bool(n > 0 and max_abs <= atol and bool(top1.all())),
    }


def parity_document(stats: dict[str, Any], rows: list[dict[str, Any]], onnx_path: Path, data: bytes,
                    graph_info: dict[str, Any], ckpt_path: Path, features: Path, hyper: dict[str, Any],
                    **extra: Any) -> dict[str, Any]:
    """The parity report: the statistics, what was compared, and the graph's description."""
    return {
        **stats,
        "requested": hyper["parity_samples"],
        "splits": dict(Counter(r["split"] for r in rows)),
        "onnx": str(onnx_path),
        "onnx_sha256": sha256_bytes(data),
        "opset": hyper["opset"],
        **graph_info,
        **extra,
        "ckpt": str(ckpt_path),
        "features": str(features),
        "provenance": manifest(STAGE, params=hyper)["provenance"],
        "resources": resources(),
    }


def log_parity(stats: dict[str, Any], atol: float) -> None:
    log.info("parity on %d tensors: max |dlogit| %.3g (atol %g), mean %.3g, cosine min %.6f, top-1 agreement %.4f",
             stats["n"], stats["max_abs"], atol, stats["mean_abs"], stats["cosine_min"], stats["top1_agreement"])


def parity_failure(stats: dict[str, Any], atol: float) -> str:
    return (f"ONNX Runtime vs PyTorch parity failed on {stats['n']} tensors (max |dlogit| {stats['max_abs']:.3g} > "
            f"atol {atol:g} or {stats['top1_disagreements']} top-1 disagreements)")


def failed_report_path(report: Path) -> Path:
    return report.with_name(f"{report.stem}.failed.json")


@contextlib.contextmanager
def temp_sibling(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` that is removed unless it was moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


# ---- the stage ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser(__doc__.splitlines()[0], STAGE)
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint from pipeline.stages.train (ckpt.pt)")
    p.add_argument("--features", type=Path, required=True, help="features folder the model was trained on")
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write (kws.onnx)")
    p.add_argument("--report", type=Path, help="also write the parity report JSON here (onnx_parity.json)")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime CPU threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_stage_args(build_parser(), argv, STAGE)
    setup_logging(args.verbose)

    prefer_passive_openmp()
    import onnx
    import torch

    from pipeline.audio.features import FeatureSet

    torch.set_num_threads(args.threads)
    ckpt_path, out = Path(args.ckpt), Path(args.out)
    report = Path(args.report) if args.report else None
    ckpt = load_checkpoint(ckpt_path)
    fs = FeatureSet.open(args.features)
    contract = check_contracts(ckpt, ckpt_path, fs.contract, fs.classes, Path(args.features))
    classes = list(ckpt["classes"])
    model = build_model(ckpt, ckpt_path)
    input_shape = contract.input_shape

    proto = torch_to_onnx(model, input_shape, args.opset)
    proto, n_folded = fold_static_shapes(proto)
    log.info("exported opset %d; folded %d shape-arithmetic nodes into constants", args.opset, n_folded)
    graph_info = check_graph(proto, input_shape, len(classes), out)
    hyper = {"opset": args.opset, "parity_samples": args.parity_samples, "parity_atol": args.parity_atol}
    prov = manifest(STAGE, inputs=[ckpt_path, Path(args.features) / "manifest.json"], params=hyper,
                    extra={"train": ckpt.get("provenance", {}), "best_epoch": ckpt.get("best_epoch")})
    set_metadata(proto, {
        "classes": json.dumps(classes),
        "contract": contract.to_json(),
        "model_config": json.dumps(ckpt["model_config"], sort_keys=True),
        "family": ckpt.get("family", "crnn"),
        "provenance": json.dumps(prov, sort_keys=True),
    })
    proto.producer_name = "pipeline.stages.export"
    proto.doc_string = f"KWS {ckpt.get('family', 'crnn')} logits; see metadata_props"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        die(f"{out}: onnx.checker rejects the exported model ({e}); this is a bug in pipeline.stages.export or pipeline.model")
    data = proto.SerializeToString()

    rows = parity_rows(fs, args.parity_samples)
    if len(rows) < args.parity_samples:
        log.warning("only %d feature tensors exist; parity runs on all of them (asked for %d)",
                    len(rows), args.parity_samples)
    x = np.ascontiguousarray(fs.x[[int(r["i"]) for r in rows]], dtype=np.float32)

    failed = failed_report_path(report) if report else None
    with temp_sibling(out) as tmp:
        tmp.write_bytes(data)
        ref = torch_logits(model, x)
        got = onnx_logits(tmp, x, args.threads)
        stats = parity_stats(ref, got, args.parity_atol)
        doc = parity_document(stats, rows, out, data, graph_info, ckpt_path, Path(args.features), hyper,
                              folded_nodes=n_folded)
        log_parity(stats, args.parity_atol)
        if not stats["pass"]:
            out.unlink(missing_ok=True)
            if report:
                report.unlink(missing_ok=True)
                atomic_write_json(failed, doc)
            die(f"{out}: {parity_failure(stats, args.parity_atol)}; no ONNX written"
                + (f"; details in {failed}" if failed else ""))
        if report:
            failed.unlink(missing_ok=True)
            atomic_write_json(report, doc)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)  # last: kws.onnx is the make target
    print(f"wrote {out} ({len(data)} bytes, opset {args.opset}, ops {sorted(graph_info['op_types'])}); "
          f"parity max |dlogit| {stats['max_abs']:.3g} on {stats['n']} tensors" + (f" -> {report}" if report else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
