"""The board runtime on this machine: numpy front end vs the pipeline's, events vs pipeline.eval.detect, faults."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.runtime.frontend import Frontend, StreamingFrontend
from device.runtime.pack import CODE
from pipeline.audio.features import _kernels, load_contract, logmel
from pipeline.audio.wav import load_audio
from pipeline.eval.detect import iter_window_batches
from tests.conftest import ROOT, crnn_contract, write_wav
from tests.device.tiny_model import make_listen_build
from tests.eval.conftest import SR, quiet_noise, tone


def stream_windows(fe: StreamingFrontend, audio: np.ndarray, chunk: int) -> np.ndarray:
    out = []
    for i in range(0, audio.size, chunk):
        fe.push(audio[i:i + chunk])
        while (x := fe.next_window()) is not None:
            out.append(x)
    fe.finish()
    while (x := fe.next_window()) is not None:
        out.append(x)
    return np.concatenate(out)


@pytest.mark.parametrize("contract", [load_contract(), crnn_contract()], ids=["embedding", "crnn"])
@pytest.mark.parametrize("chunk", [1600, 777, 16000])
def test_numpy_features_match_the_pipeline_within_1e_4(contract, chunk: int) -> None:
    seed = load_audio(ROOT / "data" / "demo-seeds" / "SALIR" / "000_salir.wav")
    rng = np.random.default_rng(3)
    audio = np.concatenate([0.01 * rng.standard_normal(5000).astype(np.float32), seed, np.zeros(3333, np.float32)])
    want = np.concatenate([logmel(b, contract) for b in iter_window_batches(audio, contract.clip_samples, 1600, 64)])
    fb = _kernels(contract)[1].numpy()
    got = stream_windows(StreamingFrontend(contract.as_dict(), fb, 1600), audio, chunk)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) < 1e-4
    whole = Frontend(contract.as_dict(), fb).logmel(audio[:contract.clip_samples])
    assert float(np.abs(whole - want[:1]).max()) < 1e-4


def test_a_short_input_is_one_zero_padded_window() -> None:
    c = load_contract()
    fe = StreamingFrontend(c.as_dict(), _kernels(c)[1].numpy(), 1600)
    short = (0.1 * np.random.default_rng(5).standard_normal(4000)).astype(np.float32)
    got = stream_windows(fe, short, 4000)
    want = logmel(np.pad(short, (0, c.clip_samples - 4000)), c)
    assert got.shape == (1, 1, c.n_frames, c.n_mels) and float(np.abs(got - want).max()) < 1e-4


def bundle_from(build: Path, dest: Path) -> Path:
    """The runtime part of a deploy bundle, laid out as on the board."""
    (dest / "runtime").mkdir(parents=True)
    (dest / "model").mkdir()
    for name, src in CODE.items():
        shutil.copy(src, dest / "runtime" / name)
    for f in (build / "runtime").iterdir():
        shutil.copy(f, dest / "runtime" / f.name)
    shutil.copy(build / "pulsar2" / "output" / "compiled.axmodel", dest / "model" / "compiled.axmodel")
    shutil.copy(build / "model" / "kws.onnx", dest / "model" / "kws.onnx")
    return dest


def run_listen(bundle: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """listen.py as the board runs it: a script in the bundle, no repository on its path."""
    return subprocess.run([sys.executable, str(bundle / "runtime" / "listen.py"), "--bundle", str(bundle), *args],
                          capture_output=True, text=True, timeout=120, cwd=bundle, env=env)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("runtime")
    return bundle_from(make_listen_build(tmp / "build"), tmp / "bundle")


@pytest.fixture(scope="module")
def tones_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    audio = quiet_noise(9.0)
    audio[int(1.0 * SR):int(1.6 * SR)] += tone(300.0, 0.6, 0.0, tone_s=0.6)
    audio[int(4.0 * SR):int(4.6 * SR)] += tone(2000.0, 0.6, 0.0, tone_s=0.6)
    audio[int(7.2 * SR):int(7.8 * SR)] += tone(300.0, 0.6, 0.0, tone_s=0.6)
    return write_wav(tmp_path_factory.mktemp("wav") / "tones.wav", audio)


def host_events(bundle: Path, wav: Path) -> list[dict]:
    out = bundle.parent / "detect.json"
    r = subprocess.run([sys.executable, "-m", "pipeline.eval.detect", str(wav), "--onnx", str(bundle / "model" / "kws.onnx"),
                        "--settings", str(bundle.parent / "build" / "detector" / "settings.json"), "--json", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())["events"]


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_the_runtime_names_the_calibrated_rate_to_two_decimals(tmp_path: Path) -> None:
    from device.runtime.pack import pack
    build = make_listen_build(tmp_path / "build")
    settings = build / "detector" / "settings.json"
    doc = json.loads(settings.read_text(encoding="utf-8"))
    doc["calibration"]["fa_per_hour"] = 0.4967963278057437  # one false accept in 120.8 min
    settings.write_text(json.dumps(doc), encoding="utf-8")
    spec = pack(build / "model" / "kws.onnx", settings, tmp_path / "runtime")
    assert spec["detector_source"] == "calibrated by make detector (0.50 FA/h on the development set)"


@pytest.mark.parametrize("model", ["compiled.axmodel", "kws.onnx"])
def test_the_runtime_fires_exactly_the_host_detector_events(bundle: Path, tones_wav: Path, model: str) -> None:
    """Same windows, same state machine (the bundle's detector.py is pipeline/core/detector.py): the same events,
    through the emulator's axengine (the EMULATED axmodel) and through ONNX Runtime."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "device" / "emulator")}
    r = run_listen(bundle, "--wav", str(tones_wav), "--fast", "--model", str(bundle / "model" / model), env=env)
    assert r.returncode == 0, r.stderr
    got = events_of(r.stdout)
    want = host_events(bundle, tones_wav)
    assert [e["class_name"] for e in want] == ["ALFA", "BRAVO", "ALFA"]
    assert [(e["class"], e["time_s"], e["start_s"], e["window"]) for e in got] == [
        (e["class_name"], e["end_s"], e["start_s"], e["window_index"]) for e in want]
    assert all(abs(g["prob"] - w["score"]) < 1e-5 and g["latency_ms"] >= 0 for g, w in zip(got, want))
    assert ("axengine EMULATOR" if model.endswith("axmodel") else "onnxruntime") in r.stderr


def test_stats_and_exec(bundle: Path, tones_wav: Path, tmp_path: Path) -> None:
    log = tmp_path / "fired.txt"
    hook = tmp_path / "hook with space.sh"
    hook.write_text(f'#!/bin/sh\necho "$1" >> "{log}"\n')
    hook.chmod(0o755)
    r = run_listen(bundle, "--wav", str(tones_wav), "--fast", "--model", str(bundle / "model" / "kws.onnx"),
                   "--stats", "--exec", f"'{hook}'")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stderr.strip().splitlines()[-1])["stats"]
    assert stats["hops"] == 81 and stats["events"] == 3 and stats["real_time_factor"] > 0
    for _ in range(50):
        if log.exists() and len(log.read_text().split()) == 3:
            break
        __import__("time").sleep(0.1)
    assert log.read_text().split() == ["ALFA", "BRAVO", "ALFA"]


def test_keyword_free_audio_fires_nothing(bundle: Path, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "quiet.wav", quiet_noise(5.0, seed=9))
    r = run_listen(bundle, "--wav", str(wav), "--fast", "--model", str(bundle / "model" / "kws.onnx"))
    assert r.returncode == 0 and events_of(r.stdout) == []


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda b: (b / "runtime" / "runtime.json").unlink(), "runtime.json: missing from the bundle; deploy it again"),
        (lambda b: (b / "model" / "compiled.axmodel").unlink(), "compiled.axmodel: model not found; deploy the bundle again"),
    ],
)
def test_a_broken_bundle_is_a_clear_error(bundle: Path, tmp_path: Path, tones_wav: Path, break_it, message: str) -> None:
    broken = shutil.copytree(bundle, tmp_path / "b")
    break_it(broken)
    r = run_listen(broken, "--wav", str(tones_wav), "--fast", env={"PATH": "/usr/bin:/bin",
                                                                     "PYTHONPATH": str(ROOT / "device" / "emulator")})
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_a_wav_of_another_rate_names_the_fix(bundle: Path, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "cd.wav", np.zeros(44100, np.float32), sr=44100)
    r = run_listen(bundle, "--wav", str(wav), "--fast", "--model", str(bundle / "model" / "kws.onnx"))
    assert r.returncode == 2 and "44100 Hz" in r.stderr and "sox IN -r 16000 -c 1 -b 16 OUT.wav" in r.stderr


def test_without_axengine_the_error_says_how_to_install_it(bundle: Path, tones_wav: Path) -> None:
    r = run_listen(bundle, "--wav", str(tones_wav), "--fast", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "cannot import axengine" in r.stderr and "pyaxengine" in r.stderr


def test_a_missing_capture_device_is_a_clear_error_and_leaves_nothing_running(bundle: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "arecord"
    tool.write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'device' / 'emulator' / 'arecord.py'} \"$@\"\n")
    tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "AX_EMULATOR_MIC": str(tmp_path / "none.wav")}
    r = run_listen(bundle, "--device", "hw:7,0", "--model", str(bundle / "model" / "kws.onnx"), env=env)
    assert r.returncode == 2
    assert "arecord -q -D hw:7,0" in r.stderr and "audio open error" in r.stderr and "arecord -l" in r.stderr
