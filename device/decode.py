"""Decode board outputs: ``output.bin`` (raw float32 logits) -> softmax probabilities per class and top-1.

PATH is an ``output.bin`` or a folder of ``<k>/output.bin`` (as ``ax_run_model`` writes them); the class
names come from ``--classes``, the ONNX metadata (``--onnx``) or a features folder (``--features``). A file
whose size is not 4 * n_classes bytes is refused. ``--labels labels.csv`` (from pipeline.stages.npu_inputs) adds
the expected class per ``k`` and the accuracy.

    python -m device.decode runs/latest/output --onnx build/model/kws.onnx --labels build/npu_inputs/labels.csv --json decoded.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.cli import StageError, run_main, setup_logging
from pipeline.core.io import atomic_write_json
from pipeline.model.infer import softmax

log = logging.getLogger(__name__)

OUTPUT_NAME = "output.bin"


class DecodeError(StageError):
    """A missing or wrong-sized output file, or no way to know the classes."""


def read_logits(path: str | os.PathLike[str], n_classes: int) -> np.ndarray:
    """The float32 logits ``(n_classes,)`` in ``path``; refuses any size other than 4 * n_classes bytes."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise DecodeError(f"{p}: not found; give an output.bin or a folder of <k>/output.bin") from None
    expected = 4 * n_classes
    if size != expected:
        raise DecodeError(f"{p}: {size} bytes, expected {expected} (= 4 bytes x {n_classes} float32 logits); "
                          "is this the output of this model (check --classes/--onnx) and was it copied whole?")
    return np.fromfile(p, dtype="<f4", count=n_classes).astype(np.float32)


def find_outputs(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """(key, file) for each PATH: a file is itself; a folder is its own output.bin or its ``<k>/output.bin`` in k order."""
    found: list[tuple[str, Path]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            found.append((p.parent.name if p.name == OUTPUT_NAME else p.stem, p))
        elif p.is_dir():
            if (p / OUTPUT_NAME).is_file():
                found.append((p.name, p / OUTPUT_NAME))
                continue
            subs = [d for d in p.iterdir() if (d / OUTPUT_NAME).is_file()]
            if not subs:
                raise DecodeError(f"{p}: no {OUTPUT_NAME} and no <k>/{OUTPUT_NAME} inside; point at the run's output folder")
            subs.sort(key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))
            found.extend((d.name, d / OUTPUT_NAME) for d in subs)
        else:
            raise DecodeError(f"{p}: not found; give an output.bin or a folder of <k>/{OUTPUT_NAME}")
    return found


def classes_from(classes: str | None, onnx: Path | None, features: Path | None) -> list[str]:
    if classes:
        names = [c.strip() for c in classes.split(",") if c.strip()]
    elif onnx is not None:
        from pipeline.model.infer import read_metadata

        try:
            names = json.loads(read_metadata(onnx)["classes"])
        except (OSError, KeyError, ValueError) as e:
            raise DecodeError(f"{onnx}: no 'classes' in the ONNX metadata ({e}); pass --classes A,B,…") from None
    elif features is not None:
        try:
            names = json.loads((features / "manifest.json").read_text(encoding="utf-8"))["classes"]
        except (OSError, KeyError, ValueError) as e:
            raise DecodeError(f"{features / 'manifest.json'}: no 'classes' ({e}); pass --classes A,B,…") from None
    else:
        raise DecodeError("the class names are unknown; pass --classes A,B,…, --onnx build/model/kws.onnx "
                          "or --features build/features")
    if len(names) < 2:
        raise DecodeError(f"need at least 2 class names, got {names}")
    return list(names)


def read_labels(path: Path) -> dict[str, str]:
    """``k -> class`` from a pipeline.stages.npu_inputs labels.csv."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return {row["k"]: row["class"] for row in csv.DictReader(f)}
    except (OSError, KeyError) as e:
        raise DecodeError(f"{path}: not a labels.csv with k and class columns ({e}); use build/npu_inputs/labels.csv") from None


def decode(paths: Sequence[str | os.PathLike[str]], classes: Sequence[str],
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Decode every output under ``paths``: per item logits, probabilities, top-1 (and the expected class)."""
    items = []
    for key, p in find_outputs(paths):
        logits = read_logits(p, len(classes))
        probs = softmax(logits.astype(np.float64))
        top = int(np.argmax(probs))
        item: dict[str, Any] = {"k": key, "path": str(p), "logits": [float(v) for v in logits],
                                "probs": {c: float(v) for c, v in zip(classes, probs)},
                                "top1": classes[top], "top1_prob": float(probs[top])}
        if labels is not None:
            item["expected"] = labels.get(key)
            item["correct"] = item["expected"] == item["top1"] if item["expected"] is not None else None
        items.append(item)
    out: dict[str, Any] = {"classes": list(classes), "count": len(items), "items": items}
    judged = [it["correct"] for it in items if it.get("correct") is not None]
    if labels is not None:
        out["accuracy"] = (sum(judged) / len(judged)) if judged else None
        out["judged"] = len(judged)
    return out


def format_table(result: dict[str, Any]) -> str:
    classes = result["classes"]
    width = max(8, *(len(c) for c in classes)) + 1
    has_expected = any("expected" in it for it in result["items"])
    head = f"{'k':>6} {'top1':<{width}} {'p':>6}" + (f" {'expected':<{width}}" if has_expected else "")
    head += "".join(f"{c[:width - 1]:>{width}}" for c in classes)
    lines = [head]
    for it in result["items"]:
        line = f"{it['k']:>6} {it['top1']:<{width}} {it['top1_prob']:6.3f}"
        if has_expected:
            mark = "" if it["expected"] is None else ("" if it["correct"] else " X")
            line += f" {str(it['expected']) + mark:<{width}}"
        line += "".join(f"{it['probs'][c]:{width}.3f}" for c in classes)
        lines.append(line)
    if result.get("accuracy") is not None:
        lines.append(f"accuracy {result['accuracy']:.4f} on {result['judged']} labelled outputs")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="output.bin or a folder of <k>/output.bin")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--classes", help="comma-separated class names in label order")
    src.add_argument("--onnx", type=Path, help="take the class names from this ONNX file's metadata")
    src.add_argument("--features", type=Path, help="take the class names from this features folder")
    parser.add_argument("--labels", type=Path, help="labels.csv from pipeline.stages.npu_inputs: add expected class and accuracy")
    parser.add_argument("--json", type=Path, help="also write the result here as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    classes = classes_from(args.classes, args.onnx, args.features)
    labels = read_labels(args.labels) if args.labels is not None else None
    result = decode(args.paths, classes, labels)
    print(format_table(result))
    if args.json is not None:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
