"""Atomic file and directory writes, and content hashes.

Every artifact is written to a temporary sibling and moved into place with ``os.replace`` so an
interrupted run never leaves a file (or directory) that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make artifacts private to their builder
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text with LF line endings whatever the host OS."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_text_if_changed(path: str | os.PathLike[str], text: str) -> bool:
    """Write ``text`` atomically unless the file already holds exactly it (its mtime then stays); True if written."""
    try:
        if Path(path).read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(final: Path) -> list[Path]:
    """Remove what a killed writer of ``final`` left beside it (``.<name>.<pid>.*.tmp``, ``.<name>.old-<pid>``):
    only those whose process is gone, so a concurrent writer's work is never touched. Returns what it removed."""
    removed = []
    for p in final.parent.glob(f".{final.name}.*"):
        rest = p.name[len(final.name) + 2:]
        pid_text = rest.split(".", 1)[0] if rest.endswith(".tmp") else rest[4:] if rest.startswith("old-") else ""
        if pid_text.isdigit() and not _alive(int(pid_text)):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            log.info("removed %s, left by a killed run (process %s)", p, pid_text)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``path`` as a whole.

    On failure the temporary directory is removed and ``path`` is left exactly as it was.
    Names in ``keep`` are moved from the old directory into the new one if the new one lacks them
    (for outputs owned by another stage that share the directory).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name in keep:
        if (final / name).exists() and not (tmp / name).exists():
            os.replace(final / name, tmp / name)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
