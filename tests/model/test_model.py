"""pipeline.model.crnn: CRNN shapes for GRU and LSTM, config validation, static export graph."""

from __future__ import annotations

import pytest
import torch

from pipeline.model.crnn import CRNN, ModelConfig


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("batch", [1, 5])
def test_logit_shape(rnn: str, batch: int) -> None:
    model = CRNN(ModelConfig(n_classes=8, rnn=rnn)).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, 98, 64))
    assert out.shape == (batch, 8)
    assert torch.isfinite(out).all()


def test_sequence_geometry_matches_seed() -> None:
    cfg = ModelConfig(n_classes=8)
    assert cfg.input_shape == (1, 1, 98, 64)
    assert (cfg.seq_len, cfg.seq_features) == (24, 32 * 16)   # two 2x pools: 98x64 -> 24x16, 32 channels
    model = CRNN(cfg)
    assert isinstance(model.rnn, torch.nn.GRU) and model.rnn.bidirectional and model.rnn.hidden_size == 64
    assert model.fc.in_features == 128 and model.fc.out_features == 8
    assert isinstance(CRNN(ModelConfig(n_classes=8, rnn="lstm")).rnn, torch.nn.LSTM)


def test_rows_are_independent_in_a_batch() -> None:
    """Batching must not mix clips (eval mode): row k of a batch equals the clip run alone."""
    torch.manual_seed(0)
    model = CRNN(ModelConfig(n_classes=4)).eval()
    x = torch.randn(3, 1, 98, 64)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[k:k + 1]) for k in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_export_buffer_is_not_in_state_dict() -> None:
    sd = CRNN(ModelConfig(n_classes=3)).state_dict()
    assert "h0_export" not in sd
    assert any(k.startswith("rnn.") for k in sd)


@pytest.mark.parametrize("kw", [{"n_classes": 1}, {"n_classes": 8, "rnn": "rnn"}, {"n_classes": 8, "rnn_hidden": 0}])
def test_bad_config_is_rejected(kw: dict) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**kw)


def test_config_round_trip() -> None:
    cfg = ModelConfig(n_classes=5, rnn="lstm", rnn_hidden=32)
    assert ModelConfig.from_mapping(cfg.as_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_mapping({**cfg.as_dict(), "dropout": 0.1})


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_export_graph_is_static(rnn: str) -> None:
    """Both RNN kinds export to a graph with no dynamic-shape ops once shape arithmetic is folded."""
    from pipeline.stages.export import DYNAMIC_SHAPE_OPS, fold_static_shapes, torch_to_onnx

    model = CRNN(ModelConfig(n_classes=8, rnn=rnn)).eval()
    proto, folded = fold_static_shapes(torch_to_onnx(model, (1, 1, 98, 64), 13))
    ops = {n.op_type for n in proto.graph.node}
    assert folded > 0
    assert not ops & DYNAMIC_SHAPE_OPS, ops
    assert {"Conv", "MaxPool", rnn.upper(), "Gemm"} <= ops
    assert "BatchNormalization" not in ops   # folded into Conv in eval mode
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(size=(1, 1, 98, 64)).astype(np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-4   # folding kept the numbers
