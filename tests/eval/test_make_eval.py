"""The eval / holdout-tts make targets, checked with real `make -n` (nothing is run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # make graphs or a real (small) embedding + head build: seconds each


def make_n(*args: str, build: Path) -> str:
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-n", f"BUILD={build}", "RUNNER=local", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_eval_defaults_to_the_tts_holdout_with_the_leak_check(tmp_path: Path) -> None:
    out = make_n("eval", build=tmp_path / "b")
    assert f"-m pipeline.eval.holdout_tts --params {tmp_path}/b/params/holdout_tts.json --out {tmp_path}/b/holdout-tts" in out
    assert f"--vocabulary {tmp_path}/b/stamps/vocabulary.json" in out
    assert f"--holdout '{tmp_path}/b/holdout-tts' --out {tmp_path}/b/eval" in out
    assert f"--train-manifest {tmp_path}/b/dataset/manifest.json --seeds 'data/demo-seeds'" in out


def test_eval_uses_the_detector_calibrated_on_the_development_set(tmp_path: Path) -> None:
    b = tmp_path / "b"
    out = make_n("eval", build=b)
    lines = out.replace("\\\n", " ").splitlines()
    dev = next(i for i, line in enumerate(lines) if f"--split dev --out {b}/holdout-dev" in line)
    cal = next(i for i, line in enumerate(lines) if "-m pipeline.eval.detector_calib" in line)
    ev = next(i for i, line in enumerate(lines) if "-m pipeline.eval.evaluate" in line)
    assert dev < cal < ev
    assert f"--params {b}/params/detector.json --onnx {b}/model/kws.onnx --dev {b}/holdout-dev" in lines[cal]
    assert f"--settings {b}/detector/settings.json" in lines[ev]
    # the evaluation set is not needed to choose the detector
    assert "holdout-tts" not in lines[cal]


def test_eval_with_a_holdout_dir_skips_the_tts_set_and_reruns_when_it_changes(tmp_path: Path) -> None:
    holdout = tmp_path / "my holdout"  # a space in the path too
    (holdout / "SALIR").mkdir(parents=True)
    (holdout / "SALIR" / "a.wav").write_bytes(b"1")
    build = tmp_path / "b"
    out = make_n("eval", f"HOLDOUT={holdout}", build=build)
    assert "--out {build}/holdout-tts" not in out and f"--holdout '{holdout}' " in out
    # the summary depends on the holdout's content (a stamp of its files), not on folder mtimes
    for name in ("voices", "dataset", "features", "embeddings", "model", "holdout-dev", "detector", "eval"):
        (build / name).mkdir(parents=True, exist_ok=True)
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-t", f"BUILD={build}", "RUNNER=local",
                    f"HOLDOUT={holdout}", "eval"], check=True, capture_output=True, timeout=120)
    assert "-m pipeline.eval.evaluate" not in make_n("eval", f"HOLDOUT={holdout}", build=build)
    (holdout / "SALIR" / "a.wav").write_bytes(b"2")
    assert "-m pipeline.eval.evaluate" in make_n("eval", f"HOLDOUT={holdout}", build=build)


def test_help_lists_the_evaluation_targets(tmp_path: Path) -> None:
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "help"], capture_output=True, text=True, check=False,
                       timeout=60)
    assert "holdout-tts" in r.stdout and "eval " in r.stdout
    assert "holdout-dev" in r.stdout and "detector " in r.stdout


def test_eval_int8_scores_the_axmodel_with_the_same_detector(tmp_path: Path) -> None:
    b = tmp_path / "b"
    lines = make_n("eval-int8", build=b).replace("\\\n", " ").splitlines()
    ev = [line for line in lines if "-m pipeline.eval.evaluate" in line]
    extract = [line for line in lines if "-m pulsar2.int8_onnx" in line]
    assert len(extract) == 1 and f"--axmodel {b}/pulsar2/output/compiled.axmodel" in extract[0]
    assert len(ev) == 1 and f"--onnx {b}/pulsar2/output/emulated_int8.onnx" in ev[0]
    assert f"--settings {b}/detector/settings.json" in ev[0] and f"--out {b}/eval-int8" in ev[0]
    assert any("-m pulsar2.build" in line for line in lines)


def test_the_tts_sets_rebuild_when_their_texts_change(tmp_path: Path) -> None:
    b = tmp_path / "b"
    for name in ("holdout-dev", "holdout-tts"):
        (b / name).mkdir(parents=True)
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-t", f"BUILD={b}", "RUNNER=local",
                    "holdout-dev", "holdout-tts"], check=True, capture_output=True, timeout=120)
    assert "-m pipeline.eval.holdout_tts" not in make_n("holdout-dev", "holdout-tts", build=b)
    for source in ("pipeline/audio/texts.py", "pipeline/audio/tts.py", "pipeline/eval/holdout_tts.py"):
        out = make_n("-W", source, "holdout-dev", "holdout-tts", build=b)
        assert f"--split dev --out {b}/holdout-dev" in out and f"--out {b}/holdout-tts" in out, source


def test_eval_real_judges_other_peoples_takes_against_the_evaluation_talk(tmp_path: Path) -> None:
    real = tmp_path / "other person"
    (real / "SALIR").mkdir(parents=True)
    (real / "SALIR" / "a.wav").write_bytes(b"1")
    b = tmp_path / "b"
    for target, onnx in (("eval-real", f"{b}/model/kws.onnx"), ("eval-real-int8", f"{b}/pulsar2/output/emulated_int8.onnx")):
        out = make_n(target, f"REAL={real}", build=b).replace("\\\n", " ")
        assert f"-m pipeline.eval.holdout_tts --params {b}/params/holdout_tts.json --out {b}/holdout-tts" in out
        line = " ".join(next(x for x in out.splitlines() if "-m pipeline.eval.evaluate" in x).split())
        assert f"--onnx {onnx} --holdout '{real}' --negatives {b}/holdout-tts/FONDO --out {b}/{target} " in line
        assert (f"--train-manifest {b}/dataset/manifest.json --seeds 'data/demo-seeds' "
                f"--settings {b}/detector/settings.json") in line


def test_eval_real_without_a_folder_says_what_to_give(tmp_path: Path) -> None:
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-n", f"BUILD={tmp_path / 'b'}", "RUNNER=local", "eval-real"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0 and "give REAL=<folder>" in r.stderr
