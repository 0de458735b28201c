"""pipeline.stages.calib and pipeline.stages.npu_inputs on a tiny features folder."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio.features import FeatureSet, balanced_rows
from pipeline.core.cli import StageError, run_main
from pipeline.stages import calib, npu_inputs
from tests.features.conftest import CLASSES, ROOT

CALIB_TOML = ROOT / "pipeline" / "params" / "presets" / "smoke.toml"
NPU_TOML = ROOT / "pipeline" / "params" / "presets" / "smoke.toml"


def run_calib(build: Path, out: Path, *extra: str) -> int:
    return run_main(calib.main, ["--params", str(CALIB_TOML), "--features", str(build / "features"),
                                 "--out", str(out), *extra])


def test_balanced_rows_is_balanced_deterministic_and_prefix_balanced() -> None:
    rows = [{"i": i, "label": lab} for i, lab in enumerate([0] * 10 + [1] * 3 + [2] * 10)]
    pick = balanced_rows(rows, 3, 12, seed=5)
    # round-robin: class 1 runs out after 3, its share goes to the others in class order
    assert Counter(r["label"] for r in pick) == {0: 5, 1: 3, 2: 4}
    assert [r["label"] for r in pick[:6]] == [0, 1, 2, 0, 1, 2]
    assert pick == balanced_rows(rows, 3, 12, seed=5)
    assert [r["i"] for r in pick] != [r["i"] for r in balanced_rows(rows, 3, 12, seed=6)]
    assert len({r["i"] for r in pick}) == 12
    assert len(balanced_rows(rows, 3, 100, seed=5)) == 23


def test_calib_tar_members_shapes_balance_and_manifest(tiny_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "calib" / "calib_kws.tar"
    assert run_calib(tiny_build, out, "--num-samples", "40") == 0
    fs = FeatureSet.open(tiny_build / "features")
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"input_{k:05d}.npy" for k in range(40)]
        assert all(m.isfile() and m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        arrays = [np.load(io.BytesIO(tar.extractfile(m).read()), allow_pickle=False) for m in members]
    assert all(a.shape == (1, 1, 98, 64) and a.dtype == np.float32 for a in arrays)
    man = json.loads((out.parent / "manifest.json").read_text())
    assert man["count"] == 40 and [c["member"] for c in man["chosen"]] == [m.name for m in members]
    for a, c in zip(arrays, man["chosen"]):
        assert fs.rows[c["i"]]["split"] == "train" and fs.rows[c["i"]]["path"] == c["path"]
        np.testing.assert_array_equal(a[0], fs.x[c["i"]])
    assert man["class_counts"] == {c: 10 for c in CLASSES}
    assert len({c["i"] for c in man["chosen"]}) == 40


def test_calib_tar_is_byte_deterministic_and_seed_dependent(tiny_build: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a" / "t.tar", tmp_path / "b" / "t.tar", tmp_path / "c" / "t.tar"
    assert run_calib(tiny_build, a, "--num-samples", "20") == 0
    assert run_calib(tiny_build, b, "--num-samples", "20") == 0
    assert run_calib(tiny_build, c, "--num-samples", "20", "--seed", "99") == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_calib_refuses_more_samples_than_training_clips(tiny_build: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    n_train = len(FeatureSet.open(tiny_build / "features").rows_in("train"))
    out = tmp_path / "calib" / "calib_kws.tar"
    assert run_calib(tiny_build, out, "--num-samples", str(n_train + 1)) == 2
    err = capsys.readouterr().err
    assert str(tiny_build / "features") in err and f"num_samples={n_train + 1}" in err
    assert f"only {n_train} training clips" in err and "lower num_samples" in err
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_npu_inputs_sizes_list_labels(tiny_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "npu_inputs"
    assert run_main(npu_inputs.main, ["--params", str(NPU_TOML), "--features", str(tiny_build / "features"),
                                      "--out", str(out), "--limit", "0"]) == 0
    fs = FeatureSet.open(tiny_build / "features")
    test = fs.rows_in("test")
    n = len(test)
    assert sorted(int(p.name) for p in (out / "input").iterdir()) == list(range(n))
    raw = (out / "list.txt").read_bytes()
    assert b"\r" not in raw and raw == "".join(f"{k}\n" for k in range(n)).encode()
    with (out / "labels.csv").open(newline="") as f:
        labels = list(csv.DictReader(f))
    assert b"\r" not in (out / "labels.csv").read_bytes()
    assert [row["k"] for row in labels] == [str(k) for k in range(n)]
    assert {int(row["i"]) for row in labels} == {r["i"] for r in test}
    for row in labels:
        data = (out / "input" / row["k"] / "input.bin").read_bytes()
        assert len(data) == 25088
        i = int(row["i"])
        np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(1, 98, 64), fs.x[i])
        assert row["path"] == fs.rows[i]["path"] and row["class"] == fs.rows[i]["class"]
        assert int(row["label"]) == CLASSES.index(row["class"])
    man = json.loads((out / "manifest.json").read_text())
    assert man["count"] == n and man["classes"] == CLASSES and man["input_bytes"] == 25088


def test_npu_inputs_limit_balance_and_replace(tiny_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "npu_inputs"
    args = ["--params", str(NPU_TOML), "--features", str(tiny_build / "features"), "--out", str(out)]
    assert run_main(npu_inputs.main, args + ["--limit", "8"]) == 0
    with (out / "labels.csv").open(newline="") as f:
        classes = [row["class"] for row in csv.DictReader(f)]
    test_classes = Counter(r["class"] for r in FeatureSet.open(tiny_build / "features").rows_in("test"))
    assert len(classes) == 8
    assert min(test_classes.values()) >= 2  # the tiny dataset's hash split leaves every class >= 2 test clips
    assert Counter(classes) == {c: 2 for c in CLASSES}
    first = (out / "labels.csv").read_bytes()
    assert run_main(npu_inputs.main, args + ["--limit", "4"]) == 0
    assert len(list((out / "input").iterdir())) == 4  # the folder is replaced, not merged
    assert run_main(npu_inputs.main, args + ["--limit", "8"]) == 0
    assert (out / "labels.csv").read_bytes() == first
    assert run_main(npu_inputs.main, args + ["--limit", "-1"]) == 2


def test_npu_inputs_refuses_a_missing_features_folder(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="manifest.json: not found"):
        npu_inputs.main(["--features", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


