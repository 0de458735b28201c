"""pipeline.stages.features as a stage: the CLI on a tiny dataset, the split, FeatureSet, bad clips, single-file mode."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.features import FeatureSet, load_contract, logmel, read_clip, split_of
from pipeline.core.cli import StageError, run_main
from pipeline.stages.features import main
from tests.features.conftest import (
    CLASSES,
    CLIPS_PER_CLASS,
    DEFAULT_FEATURES_TOML,
    make_dataset,
    run_features,
    synth_clip,
)


def test_cli_writes_packed_features_index_and_manifest(tiny_build: Path) -> None:
    out = tiny_build / "features"
    assert sorted(p.name for p in out.iterdir()) == ["features.npy", "index.jsonl", "manifest.json"]
    x = np.load(out / "features.npy")
    n = len(CLASSES) * CLIPS_PER_CLASS
    assert x.shape == (n, 1, 98, 64) and x.dtype == np.float32
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    clips = [json.loads(line) for line in (tiny_build / "dataset" / "clips.jsonl").read_text().splitlines()]
    assert [r["i"] for r in rows] == list(range(n))
    assert [r["path"] for r in rows] == [c["path"] for c in clips]
    assert all(r["label"] == CLASSES.index(r["class"]) for r in rows)
    man = json.loads((out / "manifest.json").read_text())
    contract = load_contract(DEFAULT_FEATURES_TOML)
    assert man["contract"] == contract.as_dict() and man["classes"] == CLASSES
    assert man["split_counts"] == dict(Counter(r["split"] for r in rows)) | {
        s: 0 for s in ("train", "val", "test") if s not in {r["split"] for r in rows}}
    assert set(man["inputs"]) >= {str(tiny_build / "dataset" / "clips.jsonl")}
    # row 7 is exactly the contract applied to clip 7
    audio, _sr = sf.read(str(tiny_build / "dataset" / rows[7]["path"]), dtype="float32")
    np.testing.assert_allclose(x[7:8], logmel(audio, contract), rtol=0, atol=1e-6)


def test_split_is_a_pure_function_of_the_path(tiny_build: Path) -> None:
    rows = FeatureSet.open(tiny_build / "features").rows
    for r in rows:
        assert r["split"] == split_of(r["path"], 0.1, 0.2)
    # stable: another clip set does not move anyone; the fractions come out about right on many paths
    paths = [f"C/c_{k:05d}.wav" for k in range(20000)]
    splits = Counter(split_of(p, 0.15, 0.2) for p in paths)
    assert abs(splits["test"] / 20000 - 0.2) < 0.015 and abs(splits["val"] / 20000 - 0.15) < 0.015
    assert split_of("A/a_00001.wav", 0.0, 0.0) == "train"
    # growing test_fraction only moves clips into test, never out of it
    assert all(split_of(p, 0.1, 0.3) == "test" for p in paths[:2000] if split_of(p, 0.1, 0.2) == "test")


def test_two_runs_give_identical_bytes(tiny_build: Path, tmp_path: Path) -> None:
    assert run_features(tiny_build / "dataset", tmp_path / "f2", "--test-fraction", "0.2", "--workers", "1",
                        "--batch-clips", "7") == 0
    for name in ("features.npy", "index.jsonl"):
        assert (tmp_path / "f2" / name).read_bytes() == (tiny_build / "features" / name).read_bytes()


def test_featureset_open(tiny_build: Path) -> None:
    fs = FeatureSet.open(tiny_build / "features")
    assert len(fs) == fs.x.shape[0] and fs.classes == CLASSES
    assert isinstance(fs.x, np.memmap)
    assert fs.contract == load_contract(DEFAULT_FEATURES_TOML)
    assert sum(len(fs.rows_in(s)) for s in ("train", "val", "test")) == len(fs)
    with pytest.raises(ValueError, match="split"):
        fs.rows_in("holdout")


def test_featureset_open_refuses_an_unfinished_folder(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="manifest.json: not found"):
        FeatureSet.open(tmp_path)


def test_wrong_rate_or_length_names_the_clip(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "dataset", per_class=2)
    bad = ds / "BRAVO" / "bravo_00001.wav"
    sf.write(str(bad), synth_clip(1, 1)[:15000], 16000, subtype="PCM_16")
    crnn = ["--params", str(DEFAULT_FEATURES_TOML)]  # the 1 s clips of make_dataset
    with pytest.raises(StageError, match=r"bravo_00001\.wav: 16000 Hz, 15000 samples"):
        main(["--dataset", str(ds), "--out", str(tmp_path / "f"), "--no-progress", *crnn])
    sf.write(str(bad), synth_clip(1, 1), 22050, subtype="PCM_16")
    assert run_features(ds, tmp_path / "f") == 2
    assert not (tmp_path / "f").exists()  # nothing half-written
    sf.write(str(bad), np.stack([synth_clip(1, 1)] * 2, axis=1), 16000, subtype="FLOAT")
    with pytest.raises(StageError, match=r"bravo_00001\.wav: 16000 Hz, 2 channel"):
        main(["--dataset", str(ds), "--out", str(tmp_path / "f"), "--no-progress", *crnn])


def test_failed_run_leaves_the_previous_features_untouched(tiny_build: Path, tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "dataset", per_class=2)
    out = tmp_path / "features"
    assert run_features(ds, out) == 0
    before = (out / "features.npy").read_bytes()
    (ds / "ALFA" / "alfa_00000.wav").write_bytes(b"RIFF junk")
    assert run_features(ds, out) == 2
    assert (out / "features.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "features"]


def test_unknown_class_and_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="clips.jsonl|manifest.json"):
        main(["--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "f")])
    ds = make_dataset(tmp_path / "dataset", per_class=1)
    with (ds / "clips.jsonl").open("a") as f:
        f.write(json.dumps({"path": "X/x.wav", "class": "ZULU"}) + "\n")
    with pytest.raises(StageError, match=r"clips.jsonl:5: class 'ZULU'"):
        main(["--dataset", str(ds), "--out", str(tmp_path / "f")])


def test_fast_pcm16_reader_equals_soundfile(tmp_path: Path) -> None:
    c = load_contract(DEFAULT_FEATURES_TOML)
    p = tmp_path / "a.wav"
    sf.write(str(p), synth_clip(0, 3), 16000, subtype="PCM_16")
    ref, _ = sf.read(str(p), dtype="float32")
    np.testing.assert_array_equal(read_clip(p, c), ref)
    sf.write(str(p), synth_clip(0, 3), 16000, subtype="PCM_24")  # not the fast path: soundfile reads it
    ref, _ = sf.read(str(p), dtype="float32")
    np.testing.assert_array_equal(read_clip(p, c), ref)


def test_bad_fractions_are_refused(tiny_build: Path, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="no training clips"):
        main(["--dataset", str(tiny_build / "dataset"), "--out", str(tmp_path / "f"),
              "--val-fraction", "0.5", "--test-fraction", "0.5"])


def test_single_file_mode_loudest_window_plot_and_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sr = 44100  # converted on load like any user WAV
    t = np.arange(int(2.5 * sr)) / sr
    x = 0.01 * np.sin(2 * np.pi * 300 * t)
    a, b = int(1.4 * sr), int(1.8 * sr)
    x[a:b] += 0.5 * np.sin(2 * np.pi * 800 * t[: b - a])
    wav = tmp_path / "long.wav"
    sf.write(str(wav), np.stack([x, x], axis=1), sr, subtype="PCM_24")
    png, npy = tmp_path / "spec.png", tmp_path / "x.npy"
    assert run_main(main, [str(wav), "--plot", str(png), "--out", str(npy)]) == 0
    text = capsys.readouterr().out
    assert "loudest 2.000 s window" in text and "shape (1, 1, 198, 32)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    feats = np.load(npy)
    assert feats.shape == (1, 1, 198, 32) and feats.dtype == np.float32
    # the loud burst (1.4-1.8 s) is inside the chosen window, and is what the features show
    import re

    start_s, end_s = map(float, re.search(r"window, ([\d.]+)-([\d.]+) s of 2.500 s", text).groups())
    assert start_s <= 1.4 and end_s >= 1.8 and end_s - start_s == pytest.approx(2.0)
    assert feats[0, 0].max() > 3.0
    short = tmp_path / "short.wav"
    sf.write(str(short), (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32), 16000)
    assert run_main(main, [str(short)]) == 0
    assert "zero-padded" in capsys.readouterr().out
    assert run_main(main, [str(tmp_path / "missing.wav")]) == 2
