"""The board emulator's ax_run_model on its own: layouts, printout, the CRLF list quirk, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from device.bench import parse_printout
from device.bundle import collect_bundle, read_list
from device.ssh import DeviceError
from pulsar2 import axmodel
from tests.device.tiny_model import make_build

TOOL = Path(__file__).resolve().parents[2] / "device" / "emulator" / "ax_run_model.py"
SEED_SKIP = "} does not has input folder {./binary_for_npu/input/}, skipped."


def run_tool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=cwd, capture_output=True, check=False)


def terminal_view(raw: str) -> list[str]:
    """What a terminal shows: a carriage return moves the cursor back and later characters overwrite."""
    lines = []
    for line in raw.split("\n"):
        screen: list[str] = []
        col = 0
        for ch in line:
            if ch == "\r":
                col = 0
                continue
            if col < len(screen):
                screen[col] = ch
            else:
                screen.append(ch)
            col += 1
        lines.append("".join(screen))
    return lines


def test_crlf_list_skips_all_but_the_last_entry_with_the_boards_line(tmp_path):
    build = make_build(tmp_path / "b", n_inputs=3)
    seed = tmp_path / "binary_for_npu"
    (seed / "input").mkdir(parents=True)
    for k in range(3):
        (seed / "input" / str(k)).symlink_to(build / "npu_inputs" / "input" / str(k))
    (seed / "list.txt").write_bytes(b"0\r\n1\r\n2")  # Windows-written, last line unterminated (the seed's case)
    r = run_tool("-m", str(build / "pulsar2/output/compiled.axmodel"), "-i", "./binary_for_npu/input/",
                 "-o", "./binary_for_npu/output/", "-l", "./binary_for_npu/list.txt", cwd=tmp_path)
    out = r.stdout.decode()
    assert "  {0\r} does not has input folder {./binary_for_npu/input/}, skipped." in out
    shown = terminal_view(out)
    assert shown.count(SEED_SKIP) == 2
    assert "  Total found {3} input stimulus folders." in shown
    assert "  Inferring model, total 1/3. Done." in shown
    assert sorted(p.name for p in (seed / "output").iterdir()) == ["2"]

    # the same list with LF endings runs every entry
    (seed / "list.txt").write_bytes(b"0\n1\n2\n")
    r = run_tool("-m", str(build / "pulsar2/output/compiled.axmodel"), "-i", "./binary_for_npu/input/",
                 "-o", "./binary_for_npu/output/", "-l", "./binary_for_npu/list.txt", cwd=tmp_path)
    assert "does not has" not in r.stdout.decode() and "total 3/3" in r.stdout.decode()
    assert sorted(p.name for p in (seed / "output").iterdir()) == ["0", "1", "2"]

    # and deploy refuses to ship a CRLF list at all
    (build / "npu_inputs" / "list.txt").write_bytes(b"0\r\n1\r\n2\r\n")
    with pytest.raises(DeviceError, match="CRLF"):
        read_list(build / "npu_inputs" / "list.txt")
    with pytest.raises(DeviceError, match="CRLF"):
        collect_bundle(build)


def test_outputs_are_the_onnx_logits_and_verify_compares_bytes(tmp_path):
    build = make_build(tmp_path / "b", n_inputs=2)
    npu = build / "npu_inputs"
    args = ["-m", str(build / "pulsar2/output/compiled.axmodel"), "-i", f"{npu}/input/", "-o", f"{tmp_path}/out/",
            "-l", str(npu / "list.txt")]
    assert run_tool(*args, cwd=tmp_path).returncode == 0
    sess = ort.InferenceSession(str(build / "model" / "kws.onnx"), providers=["CPUExecutionProvider"])
    for k in ("0", "1"):
        x = np.fromfile(npu / "input" / k / "input.bin", dtype="<f4").reshape(1, 1, 98, 64)
        got = np.fromfile(tmp_path / "out" / k / "output.bin", dtype="<f4")
        np.testing.assert_allclose(got, sess.run(None, {"input": x})[0].ravel(), rtol=1e-5, atol=1e-5)
    ok = run_tool(*args, "--verify", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.decode().count(": OK.") == 2
    (tmp_path / "out" / "1" / "output.bin").write_bytes(b"\0" * 32)
    bad = run_tool(*args, "--verify", cwd=tmp_path)
    assert bad.returncode == 1 and "mismatch" in bad.stdout.decode()


@pytest.mark.parametrize(("npu_mode", "shown"), [("NPU1", "Half"), ("NPU2", "Full")])
def test_benchmark_printout_type_and_banner(tmp_path, npu_mode, shown):
    build = make_build(tmp_path / "b", n_inputs=1, npu_mode=npu_mode)
    r = run_tool("-m", str(build / "pulsar2/output/compiled.axmodel"), "-w", "3", "-r", "20", cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0 and "EMULATOR" in out.splitlines()[0]
    assert f"          type: {shown}" in out
    parsed = parse_printout(out)
    assert parsed["type"] == shown and parsed["repeat"] == 20 and parsed["warmup"] == 3 and parsed["EMULATED"]
    assert set(parsed["percentiles_raw_ms"]) == {"p5", "p90", "p95", "p99"}


def test_refuses_a_real_axmodel_clearly(tmp_path):
    real = tmp_path / "compiled.axmodel"
    real.write_bytes(b"\x7fAXMODEL-not-ours" + bytes(range(256)) * 4)
    assert not axmodel.is_emulated(real)
    r = run_tool("-m", str(real), cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 1 and "EMULATOR" in out and "not an emulated axmodel" in out
    assert "Run a real axmodel on the AX630C board" in out


def test_failing_set_is_reported_and_the_others_run(tmp_path):
    build = make_build(tmp_path / "b", n_inputs=3)
    npu = build / "npu_inputs"
    (npu / "input" / "1" / "input.bin").write_bytes(b"\0" * 100)
    r = run_tool("-m", str(build / "pulsar2/output/compiled.axmodel"), "-i", f"{npu}/input/", "-o", f"{tmp_path}/o/",
                 "-l", str(npu / "list.txt"), cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 1 and "[ERROR] Run model failed." in out and "100 bytes" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0", "2"]


def test_help_says_emulator_and_lists_the_documented_flags(tmp_path):
    r = run_tool("--help", cwd=tmp_path)
    text = r.stdout.decode()
    assert r.returncode == 0 and "EMULATOR" in text
    for flag in ("--model", "--repeat", "--warmup", "--affinity", "--vnpu", "--batch", "--input-folder",
                 "--output-folder", "--list", "--verify", "--inputs-is-folder", "--outputs-is-folder",
                 "--use-tensor-name", "--save-benchmark"):
        assert flag in text


def test_a_busy_port_is_refused_and_the_own_emulator_adopted(tmp_path):
    import socket

    from invoke import Context

    from device.emulator.launch import free_port, start_emulator, stop_emulator
    from pipeline.core.cli import StageError

    with socket.socket() as other:  # another program on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(StageError, match=f"127.0.0.1:{port} is already in use by another program"):
            start_emulator(Context(), tmp_path / "emu", port, runner="local")
        assert not (tmp_path / "emu" / "endpoint.json").exists()
    port = free_port()
    board = start_emulator(Context(), tmp_path / "emu", port, runner="local")
    try:
        again = start_emulator(Context(), tmp_path / "emu", port, runner="local")  # adopted, not a dead second one
        assert again.pid == board.pid
    finally:
        assert stop_emulator(tmp_path / "emu") == f"stopped the board emulator on 127.0.0.1:{port}"
    assert board.proc is not None and board.proc.wait(timeout=10) is not None
