"""The EMULATED axmodel container: a marked file that only our board emulator runs.

A real Pulsar2 ``compiled.axmodel`` is produced by Axera's compiler and runs on the board NPU. The Pulsar2
emulator (``pulsar2.emulator``) cannot produce one; it writes this container instead, so an emulated model
can never be mistaken for a real one:

    offset 0   MAGIC  b"KWS-AXMODEL-EMULATED\\n"  (21 bytes; no real axmodel starts like this)
           21  uint64 little-endian: length M of the metadata block
           29  M bytes of UTF-8 JSON metadata ("EMULATED": true, target, I/O, compiler, onnx sha256, ...)
       29 + M  uint64 little-endian: length N of the embedded ONNX
       37 + M  N bytes: the quantized (QDQ INT8) ONNX model the emulator made
       end     nothing (trailing bytes are an error)

Stdlib only: this module is copied into the board-emulator image, which has no torch and no jsonschema.

Example::

    python -m pulsar2.axmodel build/pulsar2/output/compiled.axmodel   # prints the metadata or says "not emulated"
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAGIC = b"KWS-AXMODEL-EMULATED\n"
FORMAT_VERSION = 1
_U64 = struct.Struct("<Q")
_MAX_META_BYTES = 1 << 20

REQUIRED_META = ("target_hardware", "npu_mode", "input", "output", "compiler")
_REQUIRED_IO = ("name", "shape", "dtype")


class NotEmulatedAxmodel(ValueError):
    """The file is not an (intact) emulated axmodel: a real axmodel, another file, or a damaged container."""


def _check_meta(meta: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"emulated axmodel metadata lacks {missing}; required keys: {list(REQUIRED_META)}")
    for side in ("input", "output"):
        io = meta[side]
        if not isinstance(io, dict) or any(k not in io for k in _REQUIRED_IO):
            raise ValueError(f"emulated axmodel metadata {side!r} must be an object with {list(_REQUIRED_IO)}, got {io!r}")
    if not str(meta["compiler"]).startswith("pulsar2-emulator"):
        raise ValueError(f"emulated axmodel metadata 'compiler' must start with 'pulsar2-emulator', got {meta['compiler']!r}")


def pack(onnx_bytes: bytes, meta: dict[str, Any]) -> bytes:
    """The container bytes for ``onnx_bytes`` + ``meta`` (``EMULATED``, format version and onnx sha256 are added)."""
    if not onnx_bytes:
        raise ValueError("refusing to write an emulated axmodel with an empty ONNX payload")
    _check_meta(meta)
    full = {
        "EMULATED": True,
        "format": "kws-axmodel-emulated",
        "format_version": FORMAT_VERSION,
        **{k: v for k, v in meta.items() if k != "EMULATED"},
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "onnx_bytes": len(onnx_bytes),
    }
    meta_bytes = json.dumps(full, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return b"".join([MAGIC, _U64.pack(len(meta_bytes)), meta_bytes, _U64.pack(len(onnx_bytes)), onnx_bytes])


def unpack(data: bytes, source: str = "<bytes>") -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`pack`; raises :class:`NotEmulatedAxmodel` naming ``source`` and what is wrong."""
    if not data.startswith(MAGIC):
        raise NotEmulatedAxmodel(
            f"{source}: not an emulated axmodel (first bytes {data[:16]!r}, expected the marker {MAGIC!r}); "
            "a real Pulsar2 axmodel only runs on the board NPU (ax_run_model / pyaxengine), not in the emulators"
        )
    pos = len(MAGIC)
    try:
        (meta_len,) = _U64.unpack_from(data, pos)
        pos += _U64.size
        if meta_len > _MAX_META_BYTES or pos + meta_len > len(data):
            raise NotEmulatedAxmodel(f"{source}: damaged emulated axmodel (metadata length {meta_len} is impossible)")
        meta = json.loads(data[pos:pos + meta_len].decode("utf-8"))
        pos += meta_len
        (onnx_len,) = _U64.unpack_from(data, pos)
        pos += _U64.size
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotEmulatedAxmodel(f"{source}: damaged emulated axmodel ({e}); rebuild it with `make axmodel`") from None
    onnx_bytes = data[pos:pos + onnx_len]
    if len(onnx_bytes) != onnx_len or pos + onnx_len != len(data):
        raise NotEmulatedAxmodel(
            f"{source}: damaged emulated axmodel (ONNX payload is {len(data) - pos} bytes, header says {onnx_len}); "
            "rebuild it with `make axmodel`"
        )
    if not isinstance(meta, dict) or meta.get("EMULATED") is not True:
        raise NotEmulatedAxmodel(f"{source}: emulated-axmodel marker present but metadata lacks \"EMULATED\": true")
    if meta.get("onnx_sha256") != hashlib.sha256(onnx_bytes).hexdigest():
        raise NotEmulatedAxmodel(f"{source}: damaged emulated axmodel (ONNX sha256 differs from the metadata)")
    return meta, onnx_bytes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_emulated(path: str | os.PathLike[str], onnx_bytes: bytes, meta: dict[str, Any]) -> None:
    """Write the container atomically (temp file in the same directory + ``os.replace``)."""
    # pipeline.core.io.atomic_write_bytes does the same; not imported because this file travels alone into the
    # board-emulator image.
    data = pack(onnx_bytes, meta)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_emulated(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """``(metadata, quantized ONNX bytes)``; raises :class:`NotEmulatedAxmodel` for anything else."""
    return unpack(Path(path).read_bytes(), str(path))


def is_emulated(path: str | os.PathLike[str]) -> bool:
    """True if the file starts with the emulated-axmodel marker (does not verify the payload)."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m pulsar2.axmodel FILE.axmodel", file=sys.stderr)
        return 2
    try:
        meta, onnx_bytes = read_emulated(args[0])
    except (OSError, NotEmulatedAxmodel) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(meta, indent=2, sort_keys=True))
    print(f"EMULATED axmodel: {len(onnx_bytes)} bytes of quantized ONNX inside")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
