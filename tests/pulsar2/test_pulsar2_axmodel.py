"""The EMULATED axmodel container: marked, round-trips, and refuses anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pulsar2 import axmodel

META = {"target_hardware": "AX620E", "npu_mode": "NPU1", "compiler": "pulsar2-emulator 1.0",
        "input": {"name": "input", "shape": [1, 1, 98, 64], "dtype": "float32"},
        "output": {"name": "output", "shape": [1, 8], "dtype": "float32"}}
PAYLOAD = b"\x08\x07fake-onnx-bytes" * 10


def test_round_trip_and_marking(tmp_path: Path) -> None:
    p = tmp_path / "out" / "compiled.axmodel"
    axmodel.write_emulated(p, PAYLOAD, {**META, "extra": {"k": 1}})
    data = p.read_bytes()
    assert data.startswith(axmodel.MAGIC) and b"EMULATED" in data[:64]
    assert axmodel.is_emulated(p)
    meta, onnx_bytes = axmodel.read_emulated(p)
    assert onnx_bytes == PAYLOAD
    assert meta["EMULATED"] is True
    assert meta["compiler"].startswith("pulsar2-emulator")
    assert meta["input"] == META["input"] and meta["output"] == META["output"]
    assert meta["extra"] == {"k": 1}
    assert list(p.parent.iterdir()) == [p], "temporary file left behind"


def test_emulated_flag_cannot_be_overridden(tmp_path: Path) -> None:
    p = tmp_path / "m.axmodel"
    axmodel.write_emulated(p, PAYLOAD, {**META, "EMULATED": False})
    assert axmodel.read_emulated(p)[0]["EMULATED"] is True


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"AXMODEL\x01\x02real-looking-flatbuffer", b"PK\x03\x04zip"])
def test_other_files_are_refused(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "real.axmodel"
    p.write_bytes(content)
    assert not axmodel.is_emulated(p)
    with pytest.raises(axmodel.NotEmulatedAxmodel, match="not an emulated axmodel.*real Pulsar2 axmodel"):
        axmodel.read_emulated(p)


def test_damaged_containers_are_refused(tmp_path: Path) -> None:
    good = axmodel.pack(PAYLOAD, META)
    for name, data in {"truncated": good[:-5], "trailing": good + b"x",
                       "payload-edited": good[:-1] + bytes([good[-1] ^ 1]),
                       "header-only": axmodel.MAGIC + b"\x01"}.items():
        p = tmp_path / f"{name}.axmodel"
        p.write_bytes(data)
        assert axmodel.is_emulated(p)  # the marker is there ...
        with pytest.raises(axmodel.NotEmulatedAxmodel, match="damaged"):  # ... but it is not intact
            axmodel.read_emulated(p)


def test_metadata_requirements(tmp_path: Path) -> None:
    for key in axmodel.REQUIRED_META:
        with pytest.raises(ValueError, match=key):
            axmodel.write_emulated(tmp_path / "x.axmodel", PAYLOAD, {k: v for k, v in META.items() if k != key})
    with pytest.raises(ValueError, match="pulsar2-emulator"):
        axmodel.write_emulated(tmp_path / "x.axmodel", PAYLOAD, {**META, "compiler": "pulsar2 4.2"})
    with pytest.raises(ValueError, match="empty"):
        axmodel.write_emulated(tmp_path / "x.axmodel", b"", META)
    assert not (tmp_path / "x.axmodel").exists()


def test_cli_prints_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "m.axmodel"
    axmodel.write_emulated(p, PAYLOAD, META)
    assert axmodel.main([str(p)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.rindex("}") + 1])["EMULATED"] is True
    (tmp_path / "r.axmodel").write_bytes(b"real")
    assert axmodel.main([str(tmp_path / "r.axmodel")]) == 2
