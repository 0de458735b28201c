"""The deploy bundle: the compiled axmodel + the board inputs, named by a hash of their content.

Inputs (``BUILD`` = build)::

    $BUILD/pulsar2/output/compiled.axmodel (+ manifest.json)
    $BUILD/npu_inputs/{input/<k>/input.bin, list.txt, labels.csv, manifest.json}

Bundle tree (as on the board under ``<remote_root>/<bundle-id>/``)::

    model/compiled.axmodel  model/manifest.json  input/<k>/input.bin  list.txt  labels.csv  manifest.json  SHA256SUMS
    runtime/{listen,frontend,engine,detector}.py  runtime/runtime.json  runtime/mel_fb.npy   (the board runtime,
        when ``$BUILD/runtime`` exists: ``make all`` builds it, device.runtime.pack)

``bundle-id`` is the first 16 hex digits of the sha256 of ``SHA256SUMS`` (which lists every file's
sha256), so unchanged artifacts give the same id and re-deploying transfers nothing.

Example::

    python -c "from device.bundle import collect_bundle; print(collect_bundle('build').bundle_id)"
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import tarfile
from pathlib import Path

from device.ssh import DeviceError
from pipeline.core.io import sha256_file
from pulsar2 import axmodel

SUMS_NAME = "SHA256SUMS"
COMPLETE_MARKER = ".kws-bundle-complete"
ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class Label:
    k: str
    label: int
    cls: str
    path: str


@dataclasses.dataclass(frozen=True)
class Bundle:
    build: Path
    bundle_id: str
    files: dict[str, Path]  # bundle-relative path -> local file
    sums: dict[str, str]  # bundle-relative path -> sha256
    ids: list[str]  # list.txt entries, in order
    labels: dict[str, Label]
    emulated: bool
    input_shape: tuple[int, ...]  # of one input.bin, float32 little-endian

    @property
    def has_runtime(self) -> bool:
        return "runtime/runtime.json" in self.files

    @property
    def sums_text(self) -> str:
        return "".join(f"{h}  {rel}\n" for rel, h in sorted(self.sums.items()))

    @property
    def axmodel(self) -> Path:
        return self.files["model/compiled.axmodel"]

    def input_path(self, k: str) -> Path:
        return self.files[f"input/{k}/input.bin"]


def _need(path: Path, fix: str) -> Path:
    if not path.is_file():
        raise DeviceError(f"{path}: not found; {fix}")
    return path


def read_list(path: Path) -> list[str]:
    """The entries of an LF-only list.txt; a CR anywhere is refused (the board would skip those entries)."""
    data = path.read_bytes()
    if b"\r" in data:
        raise DeviceError(
            f"{path}: has CR (Windows CRLF) line endings; ax_run_model would skip every entry but the last "
            "(`} does not has input folder`); rebuild it with `make npu-inputs` or run sed -i 's/\\r$//' on it"
        )
    ids = [line for line in data.decode("utf-8").split("\n") if line != ""]
    bad = [k for k in ids if not ID_RE.match(k)]
    if bad:
        raise DeviceError(f"{path}: entries {bad[:5]} are not plain folder names ([A-Za-z0-9_.-]); rebuild with `make npu-inputs`")
    if len(set(ids)) != len(ids):
        raise DeviceError(f"{path}: duplicate entries; rebuild with `make npu-inputs`")
    return ids


def read_labels(path: Path) -> dict[str, Label]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        want = {"k", "label", "class"}
        if not want <= set(reader.fieldnames or []):
            raise DeviceError(f"{path}: columns {reader.fieldnames} lack {sorted(want)}; rebuild with `make npu-inputs`")
        try:
            return {r["k"]: Label(r["k"], int(r["label"]), r["class"], r.get("path", "")) for r in reader}
        except ValueError as e:
            raise DeviceError(f"{path}: bad label value ({e}); rebuild with `make npu-inputs`") from None


def collect_bundle(build: str | os.PathLike[str]) -> Bundle:
    """Check the build artifacts and hash them; DeviceError names the missing or malformed file and the fix."""
    b = Path(build)
    npu = b / "npu_inputs"
    model_dir = b / "pulsar2" / "output"
    files = {
        "model/compiled.axmodel": _need(model_dir / "compiled.axmodel", "build it with `make axmodel`"),
        "list.txt": _need(npu / "list.txt", "build the board inputs with `make npu-inputs`"),
        "labels.csv": _need(npu / "labels.csv", "build the board inputs with `make npu-inputs`"),
        "manifest.json": _need(npu / "manifest.json", "build the board inputs with `make npu-inputs`"),
    }
    if (model_dir / "manifest.json").is_file():
        files["model/manifest.json"] = model_dir / "manifest.json"
    ids = read_list(files["list.txt"])
    if not ids:
        raise DeviceError(f"{files['list.txt']}: empty; build the board inputs with `make npu-inputs`")
    labels = read_labels(files["labels.csv"])
    try:
        shape = tuple(int(d) for d in json.loads(files["manifest.json"].read_text()).get("shape") or ())
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise DeviceError(f"{files['manifest.json']}: unreadable ({e}); rebuild with `make npu-inputs`") from None
    if not shape:
        raise DeviceError(f"{files['manifest.json']}: no input shape; rebuild with `make npu-inputs`")
    want_bytes = 4 * math.prod(shape)
    for k in ids:
        p = _need(npu / "input" / k / "input.bin", "rebuild the board inputs with `make npu-inputs`")
        if p.stat().st_size != want_bytes:
            raise DeviceError(f"{p}: {p.stat().st_size} bytes, expected {want_bytes} (float32 {list(shape)}); "
                              "rebuild with `make npu-inputs`")
        if k not in labels:
            raise DeviceError(f"{files['labels.csv']}: no row for input {k!r}; rebuild with `make npu-inputs`")
        files[f"input/{k}/input.bin"] = p
    files.update(_runtime_files(b / "runtime"))
    sums = {rel: sha256_file(p) for rel, p in files.items()}
    text = "".join(f"{h}  {rel}\n" for rel, h in sorted(sums.items()))
    bundle_id = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Bundle(b, bundle_id, files, sums, ids, labels, axmodel.is_emulated(files["model/compiled.axmodel"]), shape)


def _runtime_files(runtime: Path) -> dict[str, Path]:
    """The board runtime's code and data, or nothing when ``make all`` has not built ``$BUILD/runtime``."""
    from device.runtime.pack import CODE, MEL_FB

    if not (runtime / "runtime.json").is_file():
        return {}
    files = {f"runtime/{name}": path for name, path in CODE.items()}
    files["runtime/runtime.json"] = runtime / "runtime.json"
    files[f"runtime/{MEL_FB}"] = _need(runtime / MEL_FB, "rebuild the runtime with `make all`")
    return files


def write_archive(bundle: Bundle, dest: Path) -> tuple[Path, str, int]:
    """One gzip tar ``<bundle-id>/…`` + SHA256SUMS; returns (path, sha256, bytes)."""
    path = dest / f"{bundle.bundle_id}.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        for rel, src in sorted(bundle.files.items()):
            info = tar.gettarinfo(str(src), arcname=f"{bundle.bundle_id}/{rel}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with src.open("rb") as f:
                tar.addfile(info, f)
        sums = bundle.sums_text.encode()
        info = tarfile.TarInfo(f"{bundle.bundle_id}/{SUMS_NAME}")
        info.size, info.mode = len(sums), 0o644
        tar.addfile(info, io.BytesIO(sums))
    return path, sha256_file(path), path.stat().st_size
