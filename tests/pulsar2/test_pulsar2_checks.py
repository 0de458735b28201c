"""pulsar2.checks: calibration archives (tar/zip, Numpy/Binary, flat or per-tensor) and input_shapes parsing."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pulsar2.checks import TensorInfo, check_calibration_archive, load_calibration, parse_input_shapes
from tests.pulsar2.pulsar2_fixtures import npy_bytes, write_tar

T = TensorInfo("input", (1, 1, 98, 64), "float32")


def test_zip_and_binary_archives(tmp_path: Path) -> None:
    a = np.arange(98 * 64, dtype=np.float32).reshape(1, 1, 98, 64)
    z = tmp_path / "calib.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("input_00000.npy", npy_bytes(a))
        f.writestr("input_00001.npy", npy_bytes(a + 1))
    assert check_calibration_archive(z, T, "Numpy") == ([], 2)
    got = load_calibration(z, T, "Numpy", limit=1)
    assert len(got) == 1 and np.array_equal(got[0], a)

    b = write_tar(tmp_path / "bin.tar", {"input/0.bin": a.tobytes(), "input/1.bin": (a * 2).tobytes(), "other/x.bin": b"1"})
    assert check_calibration_archive(b, T, "Binary") == ([], 2)
    assert np.array_equal(load_calibration(b, T, "Binary", limit=-1)[1], a * 2)
    short = write_tar(tmp_path / "short.tar", {"0.bin": a.tobytes()[:-4]})
    problems, n = check_calibration_archive(short, T, "Binary")
    assert n == 1 and "25084 bytes, expected 25088" in problems[0]


def test_problems_are_counted_and_summarised(tmp_path: Path) -> None:
    members = {f"input_{i:05d}.npy": npy_bytes(np.zeros((1, 1, 98, 64), np.float32)) for i in range(5)}
    members.update({f"input_{i:05d}.npy": npy_bytes(np.zeros((98, 64), np.float32)) for i in range(5, 10)})
    members["input_00010.npy"] = b"garbage"
    problems, n = check_calibration_archive(write_tar(tmp_path / "c.tar", members), T, "Numpy", shown_path="calib.tar")
    assert n == 11 and len(problems) == 1
    assert problems[0].startswith("calib.tar: 6 of 11 calibration files do not match ONNX input 'input'")
    assert "(3 more)" in problems[0] and "make calib" in problems[0]


def test_image_format_is_not_checked_here(tmp_path: Path) -> None:
    problems, n = check_calibration_archive(tmp_path / "x.tar", T, "Image")
    assert n == 0 and "Numpy" in problems[0]


def test_parse_input_shapes() -> None:
    assert parse_input_shapes("") == {}
    assert parse_input_shapes("input:1x1x98x64") == {"input": (1, 1, 98, 64)}
    assert parse_input_shapes("a:1x3;b:2") == {"a": (1, 3), "b": (2,)}
