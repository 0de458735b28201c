"""pipeline.stages.train on a tiny synthetic packed feature set: accuracy, determinism, outputs, early stopping."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.cli import run_main
from pipeline.stages import train as train_mod
from pipeline.stages.train import OPTIMISTIC_NOTE, batch_order, classification_metrics, confusion_matrix, main
from tests.conftest import crnn_contract

from .conftest import CLASSES, write_feature_set

PARAMS = Path(__file__).resolve().parents[2] / "pipeline" / "params" / "models" / "crnn.toml"
FAST = ["--epochs", "6", "--batch-size", "16", "--threads", "1", "--no-progress"]
# A half-second, 32-mel contract (48 frames) keeps these trainings quick; the export tests use the real 98x64.
SMALL = dataclasses.replace(crnn_contract(), clip_samples=8000, n_mels=32, n_frames=48)


def train(features: Path, out: Path, *extra: str) -> int:
    return run_main(main, ["--params", str(PARAMS), "--features", str(features), "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    features = write_feature_set(root / "features", per_class=30, contract=SMALL)
    assert train(features, root / "model") == 0
    return features, root / "model"


def test_reaches_good_accuracy_on_separable_data(trained: tuple[Path, Path]) -> None:
    metrics = json.loads((trained[1] / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9
    assert metrics["n_test"] == 24 and metrics["counts"] == {"train": 72, "val": 24, "test": 24}
    assert set(metrics["per_class"]) == set(CLASSES)
    for m in metrics["per_class"].values():
        assert set(m) == {"precision", "recall", "f1", "support"} and m["support"] == 6
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (4, 4) and cm.sum() == 24 and np.trace(cm) / 24 == pytest.approx(metrics["test_accuracy"])
    assert "OPTIMISTIC" in metrics["note"] and metrics["note"] == OPTIMISTIC_NOTE
    assert 1 <= metrics["best_epoch"] <= 6


def test_checkpoint_contents(trained: tuple[Path, Path]) -> None:
    features, out = trained
    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert {"state_dict", "model_config", "classes", "contract", "params", "provenance", "best_epoch"} <= set(ckpt)
    assert ckpt["classes"] == list(CLASSES)
    man = json.loads((features / "manifest.json").read_text())
    assert ckpt["contract"] == man["contract"]
    assert ckpt["model_config"]["n_classes"] == 4 and ckpt["model_config"]["rnn"] == "gru"
    assert ckpt["params"]["epochs"] == 6 and ckpt["params"]["seed"] == 1234   # flag beats TOML, TOML default kept
    assert ckpt["provenance"]["stage"] == "train"
    assert str(features / "manifest.json") in ckpt["provenance"]["inputs"]
    from pipeline.model.crnn import CRNN, ModelConfig

    model = CRNN(ModelConfig.from_mapping(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])   # strict: every key matches


def test_side_outputs(trained: tuple[Path, Path]) -> None:
    out = trained[1]
    with (out / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"} <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    text = (out / "confusion.txt").read_text()
    assert all(c in text for c in CLASSES) and "OPTIMISTIC" in text
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]   # no temp files left


def test_deterministic(trained: tuple[Path, Path], tmp_path: Path) -> None:
    features, first = trained
    assert train(features, tmp_path / "again") == 0
    a = torch.load(first / "ckpt.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again" / "ckpt.pt", weights_only=True)["state_dict"]
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((first / "metrics.json").read_text())
    mb = json.loads((tmp_path / "again" / "metrics.json").read_text())
    for m in (ma, mb):
        m.pop("train_seconds")
        m.pop("resources")
    assert ma == mb


def test_other_seed_gives_other_weights(trained: tuple[Path, Path], tmp_path: Path) -> None:
    features, first = trained
    assert train(features, tmp_path / "s", "--seed", "7", "--epochs", "1") == 0
    a = torch.load(first / "ckpt.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "s" / "ckpt.pt", weights_only=True)["state_dict"]
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_early_stopping_fires(trained: tuple[Path, Path], tmp_path: Path) -> None:
    # No decrease of the val loss can beat min_delta=100, so epoch 1 stays best and patience 2 stops at epoch 3.
    features = trained[0]
    assert train(features, tmp_path / "es", "--patience", "2", "--min-delta", "100", "--early-stop") == 0
    m = json.loads((tmp_path / "es" / "metrics.json").read_text())
    assert m["stopped_early"] is True and m["epochs_run"] == 3 and m["best_epoch"] == 1
    assert m["model_config"]["n_frames"] == 48
    assert torch.load(tmp_path / "es" / "ckpt.pt", weights_only=True)["best_epoch"] == 1
    assert train(features, tmp_path / "all", "--patience", "2", "--min-delta", "100", "--no-early-stop",
                 "--epochs", "4") == 0
    m = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert m["stopped_early"] is False and m["epochs_run"] == 4 and m["best_epoch"] == 1


def test_device_cpu_and_auto_give_the_same_checkpoint_and_cuda_without_a_gpu_says_so(
        trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features, first = trained
    assert train(features, tmp_path / "cpu", "--device", "cpu") == 0
    a = torch.load(first / "ckpt.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cpu" / "ckpt.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) and b[k].device.type == "cpu" for k in a)
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the no-GPU message cannot be shown")
    capsys.readouterr()
    assert train(features, tmp_path / "cuda", "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "device cuda: torch sees no CUDA GPU here" in err and "--gpus all" in err
    assert not (tmp_path / "cuda" / "ckpt.pt").exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_of_the_forward_pass(trained: tuple[Path, Path], tmp_path: Path, precision: str) -> None:
    # bf16 autocast trains too; the weights stay float32, and metrics.json says which arithmetic made them
    features, first = trained
    assert train(features, tmp_path / precision, "--precision", precision) == 0
    m = json.loads((tmp_path / precision / "metrics.json").read_text())
    assert m["precision"] == precision and m["device"] == "cpu" and m["test_accuracy"] >= 0.9
    state = torch.load(tmp_path / precision / "ckpt.pt", weights_only=True)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    default = json.loads((first / "metrics.json").read_text())["precision"]  # auto: bf16 only where the CPU has it
    assert default == ("bf16" if train_mod.native_bf16("cpu") else "fp32")
    same = torch.load(first / "ckpt.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(same[k], state[k]) for k in state) == (precision == default)


def test_lstm_option(trained: tuple[Path, Path], tmp_path: Path) -> None:
    assert train(trained[0], tmp_path / "lstm", "--rnn", "lstm", "--epochs", "1") == 0
    ckpt = torch.load(tmp_path / "lstm" / "ckpt.pt", weights_only=True)
    assert ckpt["model_config"]["rnn"] == "lstm" and "rnn.weight_hh_l0" in ckpt["state_dict"]


def test_missing_features_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path / "nope", tmp_path / "model") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "Traceback" not in err
    assert not (tmp_path / "model" / "ckpt.pt").exists()


def test_empty_split_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = write_feature_set(tmp_path / "f", per_class=5, contract=SMALL)   # 5 rows per class: splits 0-4 are all train
    assert train(features, tmp_path / "model") == 2
    err = capsys.readouterr().err
    assert "no rows in split 'val'" in err and "index.jsonl" in err
    assert not (tmp_path / "model").exists()


def test_bad_params_value_rejected_by_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "train.toml"
    bad.write_text('[train]\nrnn = "transformer"\n')
    rc = run_main(main, ["--params", str(bad), "--features", str(tmp_path), "--out", str(tmp_path / "m")])
    assert rc == 2 and "rnn (--rnn): 'transformer' is not one of ['gru', 'lstm']" in capsys.readouterr().err


def test_batch_order_is_a_seeded_permutation() -> None:
    a, b = batch_order(50, 3, 1), batch_order(50, 3, 1)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, batch_order(50, 3, 2)) and not np.array_equal(a, batch_order(50, 4, 1))


def test_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_divergence_is_a_clean_error(trained: tuple[Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    features = tmp_path / "features"
    shutil.copytree(trained[0], features)
    x = np.load(features / "features.npy", mmap_mode="r+")
    x[:] = np.inf  # every loss is NaN from the first step
    x.flush()
    del x
    assert train(features, tmp_path / "nan", "--epochs", "2") == 2
    assert "training diverged" in capsys.readouterr().err
    assert not (tmp_path / "nan" / "ckpt.pt").exists()
