"""pipeline.eval.evaluate end to end on a tiny holdout with a tiny ONNX model, and pipeline.eval.detect's CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.cli import run_main
from pipeline.eval import evaluate
from pipeline.eval.detect import main as detect_main
from tests.conftest import write_wav
from tests.eval.conftest import SR, quiet_noise, tone

REQUIRED_KEYS = (
    "heldout_top1", "per_class", "confusion", "false_accepts", "negative_hours", "fa_per_hour",
    "detector_settings", "miss_rate_at_fa_per_hour", "accuracy_by_snr", "leak_check",
    "optimistic_training_metrics",
)


@pytest.fixture
def seeds_dir(tmp_path: Path) -> Path:
    root = tmp_path / "seeds"
    write_wav(root / "ALFA" / "000.wav", tone(300.0, 1.5, 0.5, seed=100))
    write_wav(root / "BRAVO" / "000.wav", tone(2000.0, 1.5, 0.5, seed=101))
    write_wav(root / "FONDO" / "000.wav", quiet_noise(3.0, seed=102))
    return root


def run_eval(*argv: str) -> int:
    return run_main(evaluate.main, list(argv))


def test_evaluate_writes_the_summary(tiny_onnx: Path, tiny_holdout: Path, seeds_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    onnx = model_dir / "kws.onnx"
    shutil.copy(tiny_onnx, onnx)
    (model_dir / "metrics.json").write_text(json.dumps({"test_accuracy": 0.998}), encoding="utf-8")
    out = tmp_path / "eval"
    assert run_eval("--onnx", str(onnx), "--holdout", str(tiny_holdout), "--out", str(out),
                    "--seeds", str(seeds_dir)) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for key in REQUIRED_KEYS:
        assert key in s, key
    # 4 ALFA right, 2 BRAVO right, the ALFA tone filed under BRAVO is predicted ALFA
    assert s["heldout_top1"] == pytest.approx(6 / 7)
    assert s["per_class"]["ALFA"] == {"n": 4, "correct": 4, "accuracy": 1.0}
    assert s["per_class"]["BRAVO"]["correct"] == 2
    assert s["confusion"]["true"] == ["ALFA", "BRAVO"]
    assert s["confusion"]["matrix"] == [[4, 0, 0], [1, 2, 0]]
    # 30 s of negatives with one ALFA tone in it: exactly one false accept, at about 5 s
    assert s["negative_hours"] == pytest.approx(30.0 / 3600)
    assert s["false_accepts"] == 1
    assert s["fa_per_hour"] == pytest.approx(1 * 3600 / 30.0)
    (event,) = s["false_accept_events"]
    assert event["file"] == "FONDO/n2.wav" and event["class_name"] == "ALFA" and 4.0 <= event["start_s"] <= 5.5
    assert s["accuracy_by_snr"] == {"10 dB": {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)},
                                    "clean": {"n": 4, "correct": 4, "accuracy": 1.0}}
    assert list(s["accuracy_by_snr"]) == ["clean", "10 dB"]
    assert s["detector_settings"]["on_threshold"] == 0.9
    assert set(s["miss_rate_at_fa_per_hour"]) == {"0.5", "1", "5"}
    # zero FA/h needs a threshold above the planted tone's score; the curve is a real sweep
    fa_counts = [p["false_accepts"] for p in s["det_curve"]]
    assert fa_counts[0] >= 1 and fa_counts[-1] == 0
    assert s["leak_check"]["status"] == "passed"
    opt = s["optimistic_training_metrics"]
    assert opt["label"].startswith("OPTIMISTIC") and opt["metrics"] == {"test_accuracy": 0.998}
    assert (out / "det_curve.png").stat().st_size > 1000
    assert len((out / "clips.jsonl").read_text(encoding="utf-8").splitlines()) == 7
    printed = capsys.readouterr().out
    assert "Held-out top-1" in printed and "FA/h" in printed


def test_evaluate_refuses_a_training_file_in_the_holdout(tiny_onnx: Path, tiny_holdout: Path, seeds_dir: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(seeds_dir / "ALFA" / "000.wav", tiny_holdout / "ALFA" / "copied_seed.wav")
    out = tmp_path / "eval"
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(out),
                    "--seeds", str(seeds_dir)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "copied_seed.wav" in err and "training" in err
    assert not out.exists()


def test_evaluate_refuses_hashes_listed_in_the_training_manifest(tiny_onnx: Path, tiny_holdout: Path,
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.core.io import sha256_file

    listed = tiny_holdout / "BRAVO" / "b0.wav"
    manifest = tmp_path / "dataset_manifest.json"
    manifest.write_text(json.dumps({"inputs": {"seeds/BRAVO/x.wav": sha256_file(listed)}}), encoding="utf-8")
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(tmp_path / "e"),
                    "--train-manifest", str(manifest)) == 2
    assert "b0.wav" in capsys.readouterr().err


def test_evaluate_refuses_a_training_voice(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.eval.holdout_tts import training_voices

    doc = json.loads((tiny_holdout / "manifest.json").read_text(encoding="utf-8"))
    doc["files"][0]["voice"] = training_voices()[0]
    (tiny_holdout / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    manifest = tmp_path / "dataset_manifest.json"
    manifest.write_text(json.dumps({"inputs": {}}), encoding="utf-8")
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(tmp_path / "e"),
                    "--train-manifest", str(manifest)) == 2
    err = capsys.readouterr().err
    assert "training voice" in err and "ALFA/a0.wav" in err


def test_evaluate_refuses_voices_named_in_the_training_manifest(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "dataset_manifest.json"
    manifest.write_text(json.dumps({"synthetic_positives": {"tts_voices": ["TEST+V2"]}}), encoding="utf-8")
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(tmp_path / "e"),
                    "--train-manifest", str(manifest)) == 2
    assert "test+v2" in capsys.readouterr().err


def test_evaluate_needs_training_material_or_an_explicit_skip(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(tmp_path / "e")) == 2
    assert "--skip-leak-check" in capsys.readouterr().err
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(tmp_path / "e"),
                    "--skip-leak-check") == 0
    s = json.loads((tmp_path / "e" / "summary.json").read_text(encoding="utf-8"))
    assert s["leak_check"]["status"].startswith("skipped")


def test_evaluate_rejects_an_unknown_class_folder(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_wav(tiny_holdout / "CHARLIE" / "c.wav", quiet_noise(1.0))
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(tmp_path / "e"),
                    "--skip-leak-check") == 2
    assert "CHARLIE" in capsys.readouterr().err


def test_detect_cli_prints_and_writes_events(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = quiet_noise(6.0, seed=5)
    x[SR: SR + 8000] += tone(300.0, 0.5, 0.0, seed=6)          # ALFA at 1.0 s
    x[4 * SR: 4 * SR + 8000] += tone(2000.0, 0.5, 0.0, seed=7)  # BRAVO at 4.0 s
    wav = write_wav(tmp_path / "rec.wav", x)
    out = tmp_path / "rec.json"
    assert run_main(detect_main, [str(wav), "--onnx", str(tiny_onnx), "--json", str(out)]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["n_windows"] == 51
    assert [e["class_name"] for e in doc["events"]] == ["ALFA", "BRAVO"]
    # the window that fires overlaps the tone, and is reported within a second of its onset
    for e, onset_s in zip(doc["events"], (1.0, 4.0)):
        assert e["start_s"] < onset_s + 0.5 and onset_s < e["end_s"] <= onset_s + 1.0
    assert "ALFA" in capsys.readouterr().out


def test_detect_cli_calibrates_to_a_target_fa_per_hour(tiny_onnx: Path, tmp_path: Path) -> None:
    neg = quiet_noise(20.0, seed=8)
    neg[5 * SR: 5 * SR + 8000] += 0.02 * np.sin(2 * np.pi * 300.0 * np.arange(8000) / SR)  # a faint near miss
    negs = tmp_path / "negatives"
    write_wav(negs / "n.wav", neg)
    wav = write_wav(tmp_path / "rec.wav", tone(300.0, 3.0, 1.0, seed=9))
    saved = tmp_path / "settings.json"
    argv = [str(wav), "--onnx", str(tiny_onnx), "--on-threshold", "0.3", "--off-threshold", "0.2",
            "--target-fa-per-hour", "0", "--negatives", str(negs), "--save-settings", str(saved),
            "--json", str(tmp_path / "rec.json")]
    assert run_main(detect_main, argv) == 0
    doc = json.loads(saved.read_text(encoding="utf-8"))
    assert doc["calibration"]["false_accepts"] == 0 and doc["calibration"]["reached"]
    assert doc["settings"]["on_threshold"] > 0.3
    events = json.loads((tmp_path / "rec.json").read_text(encoding="utf-8"))["events"]
    assert [e["class_name"] for e in events] == ["ALFA"]
    # the saved settings load back as the detector's settings
    assert run_main(detect_main, [str(wav), "--onnx", str(tiny_onnx), "--settings", str(saved)]) == 0


def test_detect_cli_bad_input_is_one_clear_error(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    assert run_main(detect_main, [str(bad), "--onnx", str(tiny_onnx)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}")
    assert run_main(detect_main, [str(bad), "--onnx", str(tiny_onnx), "--thresholds", "0.5,0.9"]) == 2


def test_evaluate_without_negatives_reports_no_fa_rate(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path) -> None:
    shutil.rmtree(tiny_holdout / "FONDO")
    out = tmp_path / "e"
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(out), "--skip-leak-check") == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["heldout_top1"] == pytest.approx(6 / 7)
    assert s["fa_per_hour"] is None and s["negative_hours"] == 0.0 and s["false_accepts"] == 0
    assert all(v["miss_rate"] is None for v in s["miss_rate_at_fa_per_hour"].values())


def _swapped_payload(tiny_onnx: Path) -> bytes:
    """The tiny model with ALFA's and BRAVO's weights swapped (so its predictions are recognisably its own)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(tiny_onnx))
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 2 and w.shape[0] == 3:
            init.CopyFrom(numpy_helper.from_array(w[[1, 0, 2]], init.name))
    return m.SerializeToString()


def test_evaluate_scores_the_int8_model_of_an_emulated_axmodel(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.core.io import sha256_file
    from pulsar2 import axmodel, int8_onnx

    ax = tmp_path / "compiled.axmodel"
    axmodel.write_emulated(ax, _swapped_payload(tiny_onnx), {
        "target_hardware": "AX620E", "npu_mode": "NPU1", "compiler": "pulsar2-emulator test",
        "input": {"name": "input", "shape": [1, 1, 98, 64], "dtype": "float32"},
        "output": {"name": "output", "shape": [1, 3], "dtype": "float32"},
        "source_onnx_sha256": sha256_file(tiny_onnx)})
    q = tmp_path / "emulated_int8.onnx"
    assert run_main(int8_onnx.main, ["--axmodel", str(ax), "--onnx", str(tiny_onnx), "--out", str(q)]) == 0
    base = ["--holdout", str(tiny_holdout), "--skip-leak-check"]
    assert run_main(evaluate.main, ["--onnx", str(tiny_onnx), *base, "--out", str(tmp_path / "fp32")]) == 0
    assert run_main(evaluate.main, ["--onnx", str(q), *base, "--out", str(tmp_path / "int8")]) == 0
    fp32 = json.loads((tmp_path / "fp32" / "summary.json").read_text(encoding="utf-8"))
    int8 = json.loads((tmp_path / "int8" / "summary.json").read_text(encoding="utf-8"))
    assert fp32["model"]["scored"] == "FP32 ONNX" and int8["model"]["scored"].startswith("EMULATED INT8")
    # the swapped model calls every ALFA tone BRAVO and the other way round
    assert fp32["per_class"]["ALFA"]["accuracy"] == 1.0 and int8["per_class"]["ALFA"]["accuracy"] == 0.0
    # refused: an axmodel built from another ONNX, and a file that is not an emulated axmodel
    other = tmp_path / "other.axmodel"
    axmodel.write_emulated(other, _swapped_payload(tiny_onnx), {**axmodel.read_emulated(ax)[0], "source_onnx_sha256": "0" * 64})
    capsys.readouterr()
    assert run_main(int8_onnx.main, ["--axmodel", str(other), "--onnx", str(tiny_onnx), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "different ONNX" in capsys.readouterr().err
    real = tmp_path / "real.axmodel"
    real.write_bytes(b"\x00not an emulated axmodel")
    assert run_main(int8_onnx.main, ["--axmodel", str(real), "--onnx", str(tiny_onnx), "--out", str(tmp_path / "y.onnx")]) == 2
    assert "board" in capsys.readouterr().err and not (tmp_path / "y.onnx").exists()


def test_a_file_of_about_one_second_is_slid_over_not_scored_by_its_one_window(tmp_path: Path) -> None:
    """A word at the very start of a 1 s file: the file's only window shows it where a position-sensitive
    model does not look; streamed with quiet around it, the windows slide over it as on the board."""
    from tests.eval.conftest import export_tiny_onnx

    onnx_path = export_tiny_onnx(tmp_path / "middle.onnx", frames=(40, 60))
    holdout = tmp_path / "holdout"
    for i in range(3):
        write_wav(holdout / "ALFA" / f"a{i}.wav", tone(300.0, 1.0, 0.0, tone_s=0.3, seed=i))
    args = ["--onnx", str(onnx_path), "--holdout", str(holdout), "--skip-leak-check", "--smooth-windows", "1",
            "--min-consecutive-windows", "1"]
    assert run_main(evaluate.main, [*args, "--out", str(tmp_path / "slid")]) == 0
    assert run_main(evaluate.main, [*args, "--out", str(tmp_path / "bare"), "--context-s", "0"]) == 0
    slid = json.loads((tmp_path / "slid" / "summary.json").read_text(encoding="utf-8"))
    bare = json.loads((tmp_path / "bare" / "summary.json").read_text(encoding="utf-8"))
    assert bare["heldout_top1"] == 0.0 and bare["detector_miss_rate"] == 1.0
    assert slid["heldout_top1"] == 1.0 and slid["detector_miss_rate"] == 0.0


def test_negatives_from_elsewhere_replace_the_holdouts_own_fondo(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    talk = tmp_path / "talk"
    shutil.move(tiny_holdout / "FONDO", talk)
    # the holdout's own background now holds a BRAVO tone: counted, it would be a second false accept
    with_bravo = quiet_noise(6.0, seed=40)
    with_bravo[2 * SR: 2 * SR + 8000] += tone(2000.0, 0.5, 0.0, seed=41)
    write_wav(tiny_holdout / "FONDO" / "room.wav", with_bravo)
    out = tmp_path / "e"
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--negatives", str(talk),
                    "--out", str(out), "--skip-leak-check") == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["negative_hours"] == pytest.approx(30.0 / 3600) and s["n_negative_files"] == 3
    (event,) = s["false_accept_events"]
    assert event["file"] == "negatives/n2.wav" and event["class_name"] == "ALFA"
    assert s["holdout"]["negatives"] == str(talk)
    assert f"keyword-free audio: `{talk}`" in capsys.readouterr().out


def test_negatives_folder_without_wavs_is_one_clear_error(tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--negatives", str(folder),
                        "--out", str(tmp_path / "e"), "--skip-leak-check") != 0
        assert str(folder) in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_each_keyword_file_says_up_to_which_threshold_it_is_found_and_what_that_costs(
        tiny_onnx: Path, tiny_holdout: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    assert run_eval("--onnx", str(tiny_onnx), "--holdout", str(tiny_holdout), "--out", str(out), "--skip-leak-check") == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = {r["path"]: r for r in s["keyword_files"]}
    assert len(rows) == 7
    on = s["detector_settings"]["on_threshold"]
    curve = {p["on_threshold"]: p["fa_per_hour"] for p in s["det_curve"]}
    # an ALFA tone filed under BRAVO never makes the detector fire BRAVO
    assert rows["BRAVO/b_wrong.wav"]["found_up_to"] is None and rows["BRAVO/b_wrong.wav"]["fa_per_hour_there"] is None
    for path in ("ALFA/a0.wav", "BRAVO/b0.wav"):
        r = rows[path]
        assert r["found"] and r["found_up_to"] >= on and r["fa_per_hour_there"] == curve[r["found_up_to"]]
    assert all(r["found"] == (r["found_up_to"] is not None and r["found_up_to"] >= on) for r in rows.values())
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| BRAVO/b_wrong.wav | BRAVO | ALFA (" in report and "| never | n/a |" in report


def test_firing_thresholds_is_the_highest_threshold_that_still_fires() -> None:
    from pipeline.core.detector import DetectorSettings

    classes = ["ALFA", "BRAVO", "FONDO"]
    settings = DetectorSettings(smooth_windows=1, min_consecutive_windows=2, on_threshold=0.9, off_threshold=0.5)
    run = np.array([[0.02, 0.02, 0.96], [0.955, 0.02, 0.025], [0.952, 0.02, 0.028], [0.99, 0.0, 0.01],
                    [0.02, 0.02, 0.96]])
    quiet = np.tile([0.1, 0.1, 0.8], (5, 1))
    # two windows in a row at 0.955 and 0.952: the run's floor is 0.952, so 0.95 is the grid's highest that fires
    assert evaluate.firing_thresholds([run, quiet, run], [0, 0, 1], settings, classes) == [0.95, None, None]
