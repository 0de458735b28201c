"""Several boards at once: a fabric ThreadingGroup of verified connections, one call per board in parallel.

``ThreadingGroup.run/put/get`` parallelise one Connection method; deploy and eval-npu are several steps
each, so :func:`each` runs a whole per-board function on every connection of the group in its own thread
(the same ExceptionHandlingThread machinery ThreadingGroup uses) and returns a fabric ``GroupResult``:
connection -> return value, or the exception that stopped that board (the others go on).

Example::

    python -c "from device.fleet import parse_hosts; print(parse_hosts('a,b:2222'))"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from fabric import Connection, ThreadingGroup
from fabric.group import GroupResult
from invoke.util import ExceptionHandlingThread

from device.ssh import BoardSpec, DeviceError, connect, open_connection


def parse_hosts(text: str, default_port: int = 22) -> list[tuple[str, int]]:
    """``"a,b:2222"`` -> ``[("a", 22), ("b", 2222)]``; bracketed IPv6 ``[::1]:22`` works too."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif item.count(":") == 1:
            host, port_text = item.split(":")
            if not port_text.isdigit():
                raise DeviceError(f"--hosts {text!r}: bad port in {item!r}")
            port = int(port_text)
        else:
            host, port = item, default_port
        out.append((host, port))
    if not out:
        raise DeviceError(f"--hosts {text!r}: no host given")
    return out


def specs_for(hosts: Sequence[tuple[str, int]], template: BoardSpec) -> list[BoardSpec]:
    return [dataclasses.replace(template, host=h, port=p) for h, p in hosts]


def group_for(specs: Sequence[BoardSpec]) -> tuple[ThreadingGroup, dict[Connection, BoardSpec]]:
    """A ThreadingGroup of (unopened) host-key-verifying connections, and each connection's spec."""
    conns = {connect(s): s for s in specs}
    return ThreadingGroup.from_connections(list(conns)), conns


def _worker(cxn: Connection, fn: Callable[[Connection], Any], out: dict) -> None:
    open_connection(cxn)
    out[cxn] = fn(cxn)


def each(group: ThreadingGroup, fn: Callable[[Connection], Any]) -> GroupResult:
    """Open every connection and call ``fn(conn)`` on all of them in parallel; exceptions are per board."""
    values: dict[Connection, Any] = {}
    threads = [ExceptionHandlingThread(target=_worker, kwargs={"cxn": c, "fn": fn, "out": values}) for c in group]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = GroupResult()
    for t, cxn in zip(threads, group):
        wrapper = t.exception()
        results[cxn] = wrapper.value if wrapper is not None else values[cxn]
        cxn.close()
    return results
