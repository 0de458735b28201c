"""Checks shared by the config generator and the emulator: ONNX I/O vs config, calibration tar contents.

Pulsar2 fails late and obscurely when the config names a tensor the model lacks or when the calibration
arrays do not match the model input ("data type and shape must be exactly the same as the model input",
pulsar2-docs advanced_build_guides.md). These checks fail early with the file, the value and the fix.
Every function returns a list of problems (empty = fine) so callers can report all of them at once.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}
CALIB_SUFFIX = {"Numpy": ".npy", "Binary": ".bin"}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @property
    def static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)


def _tensor_info(value_info: Any) -> TensorInfo:
    t = value_info.type.tensor_type
    dims: list[int | str] = []
    for d in t.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return TensorInfo(value_info.name, tuple(dims), _ONNX_DTYPES.get(t.elem_type, f"onnx-type-{t.elem_type}"))


def onnx_io(model_or_path: Any) -> tuple[list[TensorInfo], list[TensorInfo], set[str], set[str]]:
    """``(inputs, outputs, node names, op types)`` of an ONNX model (path, bytes or ModelProto)."""
    import onnx

    if isinstance(model_or_path, (str, Path)):
        model = onnx.load(str(model_or_path), load_external_data=False)
    elif isinstance(model_or_path, bytes):
        model = onnx.load_from_string(model_or_path)
    else:
        model = model_or_path
    inits = {i.name for i in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in inits]
    outputs = [_tensor_info(v) for v in model.graph.output]
    return inputs, outputs, {n.name for n in model.graph.node if n.name}, {n.op_type for n in model.graph.node}


def parse_input_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"input:1x1x98x64;b:1x3"`` -> ``{"input": (1, 1, 98, 64), "b": (1, 3)}`` (schema has checked the form)."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (text or "").split(";")):
        name, _, dims = part.rpartition(":")
        out[name] = tuple(int(d) for d in dims.split("x"))
    return out


def effective_inputs(config: dict[str, Any], inputs: list[TensorInfo]) -> list[TensorInfo]:
    """Model inputs with ``input_shapes`` overrides applied (as Pulsar2 does before input_processors)."""
    overrides = parse_input_shapes(config.get("input_shapes", ""))
    return [dataclasses.replace(t, shape=overrides[t.name]) if t.name in overrides else t for t in inputs]


def check_onnx_against_config(config: dict[str, Any], onnx_path: Any, where: str = "config") -> list[str]:
    """Every tensor name the config uses must exist in the ONNX; the (overridden) input shapes must be static."""
    inputs, outputs, _, _ = onnx_io(onnx_path)
    in_names = [t.name for t in inputs]
    out_names = [t.name for t in outputs]
    problems: list[str] = []

    def need(name: str, pool: list[str], path: str, kind: str) -> None:
        if name != "DEFAULT" and name not in pool:
            problems.append(f"{where}: {path} = {name!r} is not an {kind} of the ONNX model (its {kind}s: {pool}); "
                            f"set it to one of them or re-export the model with that name")

    for k, ic in enumerate(config.get("quant", {}).get("input_configs", [])):
        need(ic.get("tensor_name", ""), in_names, f"$.quant.input_configs[{k}].tensor_name", "input")
    for k, ip in enumerate(config.get("input_processors", [])):
        need(ip.get("tensor_name", ""), in_names, f"$.input_processors[{k}].tensor_name", "input")
    for k, op in enumerate(config.get("output_processors", [])):
        need(op.get("tensor_name", ""), out_names, f"$.output_processors[{k}].tensor_name", "output")
    for name in parse_input_shapes(config.get("input_shapes", "")):
        need(name, in_names, "$.input_shapes", "input")
    for t in effective_inputs(config, inputs):
        if not t.static:
            problems.append(f"{where}: ONNX input {t.name!r} has a dynamic shape {list(t.shape)}; "
                            f"fix it with input_shapes \"{t.name}:1x...\" or export a static shape")
    if len(inputs) > 1 and any(ic.get("calibration_format") in CALIB_SUFFIX
                               for ic in config.get("quant", {}).get("input_configs", [])
                               if ic.get("tensor_name") == "DEFAULT"):
        problems.append(f"{where}: the model has {len(inputs)} inputs; give one quant.input_configs entry per "
                        "input name (or use calibration_format NumpyObject)")
    return problems


def _members(archive: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every regular file in a tar / tar.gz / zip, in name order."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return sorted((i.filename, z.read(i)) for i in z.infolist() if not i.is_dir())
    with tarfile.open(archive, "r:*") as t:
        out = []
        for m in t.getmembers():
            if m.isfile():
                f = t.extractfile(m)
                out.append((m.name, f.read() if f is not None else b""))
        return sorted(out)


def calibration_members(archive: Path, tensor_name: str, fmt: str) -> list[tuple[str, bytes]]:
    """Calibration files for one input: flat at the root, or under ``<tensor_name>/`` (both layouts Pulsar2 reads)."""
    suffix = CALIB_SUFFIX[fmt]
    files = [(n.removeprefix("./"), b) for n, b in _members(archive)]
    files = [(n, b) for n, b in files if n.endswith(suffix) and not Path(n).name.startswith(".")]
    sub = [(n, b) for n, b in files if n.startswith(f"{tensor_name}/")]
    return sub or [(n, b) for n, b in files if "/" not in n]


def check_calibration_archive(
    archive: str | Path, tensor: TensorInfo, fmt: str, shown_path: str | None = None
) -> tuple[list[str], int]:
    """Check every calibration file for ``tensor``: ``(problems, number of files)``.

    Numpy: each ``.npy`` must be float32 with exactly the model input shape (batch dim included).
    Binary: each ``.bin`` must hold exactly prod(shape) float32 values.
    """
    p = Path(archive)
    name = shown_path or str(p)
    if fmt not in CALIB_SUFFIX:
        return [f"{name}: calibration_format {fmt!r} is not checked here (Image/NumpyObject); "
                "this project writes Numpy (.npy) calibration tars"], 0
    if not p.is_file():
        return [f"{name}: calibration archive not found; build it with `make calib`"], 0
    try:
        files = calibration_members(p, tensor.name, fmt)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        return [f"{name}: not a readable tar/tar.gz/zip ({e}); rebuild it with `make calib`"], 0
    suffix = CALIB_SUFFIX[fmt]
    if not files:
        return [f"{name}: no {suffix} files at the archive root or under {tensor.name}/; "
                "expected input_00000" + suffix + " ... (pipeline.stages.calib writes them)"], 0
    want_shape = tuple(int(d) for d in tensor.shape) if tensor.static else None
    bad: list[str] = []
    for member, data in files:
        if fmt == "Numpy":
            try:
                arr = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                bad.append(f"{member}: not a readable .npy ({e})")
                continue
            if arr.dtype != np.float32:
                bad.append(f"{member}: dtype {arr.dtype}, expected {tensor.dtype}")
            elif want_shape is not None and tuple(arr.shape) != want_shape:
                bad.append(f"{member}: shape {tuple(arr.shape)}, expected {want_shape} (batch dim included)")
        elif want_shape is not None and len(data) != 4 * int(np.prod(want_shape)):
            bad.append(f"{member}: {len(data)} bytes, expected {4 * int(np.prod(want_shape))} (float32 {want_shape})")
    if bad:
        shown = "; ".join(bad[:3]) + (f"; ... ({len(bad) - 3} more)" if len(bad) > 3 else "")
        return [f"{name}: {len(bad)} of {len(files)} calibration files do not match ONNX input {tensor.name!r} "
                f"{tensor.dtype}{list(tensor.shape)}: {shown}; rebuild the tar with `make calib` from the same features"], len(files)
    log.debug("%s: %d calibration files match %s", name, len(files), tensor)
    return [], len(files)


def load_calibration(archive: str | Path, tensor: TensorInfo, fmt: str, limit: int) -> list[np.ndarray]:
    """The first ``limit`` calibration arrays (``-1`` = all) in name order, as float32 of the input shape."""
    files = calibration_members(Path(archive), tensor.name, fmt)
    if limit != -1:
        files = files[:limit]
    shape = tuple(int(d) for d in tensor.shape)
    if fmt == "Numpy":
        return [np.lib.format.read_array(io.BytesIO(b), allow_pickle=False) for _, b in files]
    return [np.frombuffer(b, dtype="<f4").reshape(shape).copy() for _, b in files]
