"""docker/repro_check.py: what is compared, and that any byte difference is found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.core.cli import StageError
from tests.docker.conftest import load_script

rc = load_script("repro_check")


def fake_build(root: Path) -> Path:
    files = {
        "dataset/ALFA/alfa_00000.wav": b"RIFF-a",
        "dataset/FONDO/fondo_00000.wav": b"RIFF-f",
        "dataset/clips.jsonl": b'{"path": "ALFA/alfa_00000.wav"}\n',
        "dataset/manifest.json": b'{"created_unix": 1}',
        "features/features.npy": b"\x93NUMPY" + bytes(64),
        "features/index.jsonl": b'{"i": 0}\n',
        "features/manifest.json": b"{}",
        "calib/calib_kws.tar": b"tar" * 10,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_identical_builds_pass_and_manifests_are_ignored(tmp_path: Path) -> None:
    a, b = fake_build(tmp_path / "a"), fake_build(tmp_path / "b")
    (b / "dataset" / "manifest.json").write_bytes(b'{"created_unix": 2}')  # timestamps differ by design
    n, diffs = rc.compare_builds(a, b)
    assert diffs == [] and n == 6


def test_one_changed_byte_is_reported(tmp_path: Path) -> None:
    a, b = fake_build(tmp_path / "a"), fake_build(tmp_path / "b")
    (b / "features" / "features.npy").write_bytes(b"\x93NUMPY" + bytes(63) + b"\x01")
    _, diffs = rc.compare_builds(a, b)
    assert diffs == [rc.Difference("features/features.npy", "same size, different bytes")]


def test_extra_missing_and_resized_files_are_reported(tmp_path: Path) -> None:
    a, b = fake_build(tmp_path / "a"), fake_build(tmp_path / "b")
    (b / "dataset" / "ALFA" / "alfa_00001.wav").write_bytes(b"x")
    (a / "calib" / "calib_kws.tar").write_bytes(b"short")
    _, diffs = rc.compare_builds(a, b)
    assert {d.path: d.what.split()[0] for d in diffs} == {"dataset/ALFA/alfa_00001.wav": "only",
                                                          "calib/calib_kws.tar": "size"}


def test_an_artifact_missing_from_both_is_not_a_pass(tmp_path: Path) -> None:
    a, b = fake_build(tmp_path / "a"), fake_build(tmp_path / "b")
    for build in (a, b):
        shutil.rmtree(build / "calib")
    _, diffs = rc.compare_builds(a, b)
    assert rc.Difference("calib/calib_kws.tar", "missing from both builds") in diffs


def test_make_command_builds_only_the_compared_stages() -> None:
    cmd = rc.make_command("docker", "smoke", Path("b1"), None, "kws-base:bookworm")
    assert cmd[-3:] == ["dataset", "features", "calib"]
    assert "RUNNER=docker" in cmd and "PARAMS=smoke" in cmd and "BUILD=b1" in cmd and "BASE_IMAGE=kws-base:bookworm" in cmd
    assert "NEURAL_CACHE=" in cmd  # each build says its neural takes itself


def test_same_folder_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="give two different folders"):
        rc.main(["--build-a", str(tmp_path / "x"), "--build-b", str(tmp_path / "x")])


def test_onnx_predictions_compared_bit_for_bit(tmp_path: Path) -> None:
    import numpy as np

    from tests.device.tiny_model import tiny_onnx_bytes

    x = np.random.default_rng(0).standard_normal((5, 1, 98, 64)).astype(np.float32)
    np.save(tmp_path / "features.npy", x)
    for name, seed in (("a.onnx", 1), ("b.onnx", 1), ("c.onnx", 2)):
        (tmp_path / name).write_bytes(tiny_onnx_bytes(seed))
    assert rc.compare_onnx_predictions(tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "features.npy") == (5, 0.0)
    rows, max_abs = rc.compare_onnx_predictions(tmp_path / "a.onnx", tmp_path / "c.onnx", tmp_path / "features.npy")
    assert rows == 5 and max_abs > 0.0


def test_make_command_with_onnx_adds_the_onnx_target() -> None:
    assert rc.make_command("local", "smoke", Path("b"), None, None, onnx=True)[-4:] == ["dataset", "features", "calib", "onnx"]
