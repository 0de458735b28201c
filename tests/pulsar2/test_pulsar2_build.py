"""pulsar2.build: real image vs fail-fast vs EMULATOR selection, the docker command, log and manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulsar2 import axmodel, build, choice

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fake_docker.py"


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`docker` on PATH is tests/pulsar2/fake_docker.py; returns its argv log."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    (bindir / "docker").symlink_to(FAKE)
    log = tmp_path / "docker-calls.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("DOCKER", raising=False)
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_REPO", str(ROOT))
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", "")
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def run_build(config_path: Path, build_dir: Path, runner: str, image: str = "pulsar2:4.2", origin: str = "file",
              emu_id: str = "") -> int:
    """What make does: write the compiler choice, then build with it."""
    stamp = build_dir / "stamps" / "pulsar2.json"
    rc = choice.main(["--runner", runner, "--image", image, "--image-origin", origin, "--out", str(stamp)])
    if rc != 0:
        return rc
    return build.main(["--config", str(config_path), "--build", str(build_dir),
                       "--out", str(build_dir / "pulsar2" / "output" / "compiled.axmodel"),
                       "--choice", str(stamp), "--emulator-image-id", emu_id])


@pytest.mark.parametrize("origin", ["command line", "environment"])
@pytest.mark.parametrize("runner", ["docker", "local"])
def test_explicit_missing_image_fails_fast_with_load_instructions(
        config_path: Path, build_dir: Path, fake_docker: Path, origin: str, runner: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = build_dir / "pulsar2" / "output"
    out.mkdir(parents=True)
    (out / "compiled.axmodel").write_bytes(b"previous")
    assert run_build(config_path, build_dir, runner, image="pulsar2:9.9", origin=origin) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PULSAR2_IMAGE=pulsar2:9.9")
    assert "no such image" in err
    assert "invoke pulsar2.load --tarball" in err and "docker load -i ax_pulsar2_<ver>.tar.gz" in err
    assert "EMULATOR" in err
    assert [c[0] for c in calls(fake_docker)] == ["image"], "a container was started"
    assert (out / "compiled.axmodel").read_bytes() == b"previous"


def test_explicit_image_without_daemon_says_so(config_path: Path, build_dir: Path, fake_docker: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_DOCKER_DAEMON_DOWN", "1")
    assert run_build(config_path, build_dir, "local", image="pulsar2:4.2", origin="command line") == 2
    err = capsys.readouterr().err
    assert "Docker daemon is not reachable" in err and "invoke docker.start" in err and "docker load -i" in err


def test_explicit_image_without_docker_client(config_path: Path, build_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER", "/nonexistent/docker")
    assert run_build(config_path, build_dir, "local", origin="command line") == 2
    assert "docker client (/nonexistent/docker) is not installed" in capsys.readouterr().err


def test_default_image_missing_runs_the_native_emulator(config_path: Path, build_dir: Path, fake_docker: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run_build(config_path, build_dir, "local") == 0
    out = build_dir / "pulsar2" / "output"
    assert axmodel.is_emulated(out / "compiled.axmodel")
    assert calls(fake_docker) == [], "runner local with the default image must not touch docker"
    stdout = capsys.readouterr().out
    assert "PULSAR2 EMULATOR - NOT the Axera compiler" in stdout and "#####" in stdout
    log = (out / "build.log").read_text(encoding="utf-8")
    assert "PULSAR2 EMULATOR - NOT the Axera compiler" in log and "Quant Config Table" in log
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert man["emulated"] is True and man["mode"] == "emulator-local"
    assert man["compiler"] == {"name": "pulsar2-emulator", "version": "1.0"}
    assert man["config_sha256"] == build.sha256_file(config_path)
    assert man["axmodel_sha256"] == build.sha256_file(out / "compiled.axmodel")
    assert man["image"] == "local"


def test_default_image_missing_runs_the_emulator_image(config_path: Path, build_dir: Path, fake_docker: Path,
                                                      tmp_path: Path) -> None:
    idfile = tmp_path / "pulsar2-emulator.id"
    idfile.write_text("sha256:emu123\n")
    assert run_build(config_path, build_dir, "docker", emu_id=str(idfile)) == 0
    inspect, run = calls(fake_docker)
    assert inspect[:2] == ["image", "inspect"] and inspect[-1] == "pulsar2:4.2"
    assert run[0] == "run" and "sha256:emu123" in run
    assert run[run.index("sha256:emu123") + 1:] == ["pulsar2", "build", "--config",
                                                     "/data/build/pulsar2/kws_build_int8_config.json"]
    assert f"{build_dir.resolve()}:/data/build" in run and run[run.index("-w") + 1] == "/data"
    assert run[run.index("-u") + 1] == f"{os.getuid()}:{os.getgid()}"
    man = json.loads((build_dir / "pulsar2" / "output" / "manifest.json").read_text())
    assert man["emulated"] is True and man["image"] == "sha256:emu123" and man["mode"] == "emulator-docker"


def test_docker_emulator_needs_its_image_id(config_path: Path, build_dir: Path, fake_docker: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run_build(config_path, build_dir, "docker", emu_id="") == 2
    assert "emulator image id" in capsys.readouterr().err


def test_existing_image_runs_the_real_pulsar2(config_path: Path, build_dir: Path, fake_docker: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", "pulsar2:4.2")
    stale = build_dir / "pulsar2" / "output" / "quant" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    assert run_build(config_path, build_dir, "docker", origin="command line") == 0
    _, run, version = calls(fake_docker)
    assert run[:2] == ["run", "--rm"]
    assert f"{build_dir.resolve()}:/data/build" in run and run[run.index("-w") + 1] == "/data"
    assert run[run.index("--entrypoint") + 1] == "/bin/bash" and run[run.index("--entrypoint") + 2] == "pulsar2:4.2"
    script = run[run.index("-lc") + 1]
    assert script.startswith('pulsar2 build --config "$1"') and "chown -R" in script and "exit $rc" in script
    assert run[-3:] == ["/data/build/pulsar2/kws_build_int8_config.json", f"{os.getuid()}:{os.getgid()}",
                        "/data/build/pulsar2/output"]
    assert "pulsar2 version" in version
    out = build_dir / "pulsar2" / "output"
    assert not stale.exists(), "output_dir was not cleaned first"
    assert not axmodel.is_emulated(out / "compiled.axmodel")
    assert "Building onnx" in (out / "build.log").read_text()
    man = json.loads((out / "manifest.json").read_text())
    assert man["emulated"] is False and man["mode"] == "real" and man["image"] == "pulsar2:4.2"
    assert man["compiler"] == {"name": "pulsar2", "version": "4.2 751f68f9"}


@pytest.mark.parametrize("failure, message", [("rc", "exited with status 1"), ("no_output", "missing or empty")])
def test_real_build_failure_leaves_no_axmodel(config_path: Path, build_dir: Path, fake_docker: Path,
                                              monkeypatch: pytest.MonkeyPatch, failure: str, message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", "pulsar2:4.2")
    monkeypatch.setenv("FAKE_DOCKER_RC" if failure == "rc" else "FAKE_DOCKER_NO_OUTPUT", "1")
    out = build_dir / "pulsar2" / "output"
    out.mkdir(parents=True)
    (out / "compiled.axmodel").write_bytes(b"previous build")
    assert run_build(config_path, build_dir, "docker") == 2
    err = capsys.readouterr().err
    assert message in err and "build.log" in err
    assert not (out / "compiled.axmodel").exists()
    assert not (out / "manifest.json").exists()
    assert (out / "build.log").is_file()


def test_config_output_must_match_out(config_path: Path, build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stamp = build_dir / "stamps" / "pulsar2.json"
    assert choice.main(["--runner", "local", "--out", str(stamp)]) == 0
    rc = build.main(["--config", str(config_path), "--build", str(build_dir), "--out", str(build_dir / "x.axmodel"),
                     "--choice", str(stamp)])
    assert rc == 2 and "--out is" in capsys.readouterr().err


def test_build_module_is_stdlib_only() -> None:
    """It runs on the host in docker mode, where numpy/onnx/torch/jsonschema may be absent."""
    code = ("import sys\n"
            "for m in ('numpy', 'onnx', 'onnxruntime', 'torch', 'jsonschema', 'invoke'): sys.modules[m] = None\n"
            "import pulsar2.build, pulsar2.axmodel, pulsar2.choice\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_banner_is_a_closed_box() -> None:
    lines = build.BANNER.splitlines()
    assert len(lines) >= 5 and "PULSAR2 EMULATOR - NOT the Axera compiler" in lines[1]
    assert {len(line) for line in lines} == {78} and all(line.endswith("#") for line in lines)


def _make(build_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run only the axmodel rule of the real Makefile (-o: its inputs count as up to date and old)."""
    b = build_dir
    old = [f"-o{b}/pulsar2/kws_build_int8_config.json", f"-o{b}/model/kws.onnx", f"-o{b}/calib/calib_kws.tar"]
    return subprocess.run(["make", "--no-print-directory", f"BUILD={b}", "RUNNER=local", "PYTHON=" + sys.executable,
                           *old, *extra, f"{b}/pulsar2/output/manifest.json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_make_with_a_named_missing_image_fails_fast(config_path: Path, build_dir: Path, fake_docker: Path) -> None:
    r = _make(build_dir, "PULSAR2_IMAGE=pulsar2:0.0-missing")
    assert r.returncode != 0
    assert "error: PULSAR2_IMAGE=pulsar2:0.0-missing (from the command line)" in r.stderr
    assert "invoke pulsar2.load --tarball" in r.stderr and "EMULATOR" in r.stderr
    assert not (build_dir / "pulsar2" / "output" / "compiled.axmodel").exists()
    assert [c[0] for c in calls(fake_docker)] == ["image"]


def test_make_with_the_default_image_uses_the_emulator(config_path: Path, build_dir: Path, fake_docker: Path) -> None:
    r = _make(build_dir)
    assert r.returncode == 0, r.stderr
    assert "PULSAR2 EMULATOR - NOT the Axera compiler" in r.stdout
    assert axmodel.is_emulated(build_dir / "pulsar2" / "output" / "compiled.axmodel")
    assert json.loads((build_dir / "pulsar2" / "output" / "manifest.json").read_text())["emulated"] is True
