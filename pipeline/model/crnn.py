"""The seed's CRNN keyword-spotting model and its configuration.

Input ``(batch, 1, n_frames, n_mels)`` = ``(batch, channel, time, mel)``, static ``(1, 1, 98, 64)`` for export:

    Conv2d(1->16, 3x3, pad 1) + BN + ReLU + MaxPool2   -> (B, 16, 49, 32)
    Conv2d(16->32, 3x3, pad 1) + BN + ReLU + MaxPool2  -> (B, 32, 24, 16)
    sequence [T, C*F]                                   -> (B, 24, 512)
    bidirectional GRU (hidden 64; LSTM optional)        -> final forward and backward states (B, 128)
    Linear                                              -> (B, n_classes) logits

The readout concatenates the final hidden state of each direction, so both directions have seen the
whole clip. Every shape is static and the ONNX graph uses only Conv (BN folded), Relu, MaxPool,
Transpose, Reshape, GRU/LSTM, Gather, Concat and Gemm. (About 13.4 M MACs at 98x64, as in the seed.)

Example::

    python -c "from pipeline.model.crnn import CRNN, ModelConfig; print(CRNN(ModelConfig(n_classes=8)))"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

RnnKind = Literal["gru", "lstm"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    n_classes: int
    n_mels: int = 64
    n_frames: int = 98
    rnn: RnnKind = "gru"
    rnn_hidden: int = 64
    conv1_channels: int = 16
    conv2_channels: int = 32

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"ModelConfig: n_classes must be >= 2, got {self.n_classes}")
        if self.rnn not in ("gru", "lstm"):
            raise ValueError(f"ModelConfig: rnn must be 'gru' or 'lstm', got {self.rnn!r}")
        if self.n_frames < 4 or self.n_mels < 4:
            raise ValueError(f"ModelConfig: n_frames and n_mels must be >= 4 (two 2x pools), got {self.n_frames}x{self.n_mels}")
        for name in ("rnn_hidden", "conv1_channels", "conv2_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def seq_len(self) -> int:
        """Time steps after two 2x max-pools (floor)."""
        return self.n_frames // 2 // 2

    @property
    def seq_features(self) -> int:
        return self.conv2_channels * (self.n_mels // 2 // 2)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 1, self.n_frames, self.n_mels)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}; known: {sorted(names)}")
        return cls(**dict(data))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class CRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.conv = nn.Sequential(
            _conv_block(1, config.conv1_channels),
            _conv_block(config.conv1_channels, config.conv2_channels),
        )
        rnn_cls = nn.GRU if config.rnn == "gru" else nn.LSTM
        self.rnn = rnn_cls(
            input_size=config.seq_features, hidden_size=config.rnn_hidden, num_layers=1,
            batch_first=True, bidirectional=True,
        )
        self.fc = nn.Linear(2 * config.rnn_hidden, config.n_classes)
        # Zero initial RNN state for the static batch-1 export. As a buffer it becomes a plain initializer;
        # left implicit (or made with torch.zeros) the tracer emits Shape/Gather/Expand ops to size it.
        self.register_buffer("h0_export", torch.zeros(2, 1, config.rnn_hidden), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        # The export is static batch 1: a Python int (not x.shape[0]) keeps Shape ops out of the graph.
        batch = 1 if torch.onnx.is_in_onnx_export() else x.shape[0]
        y = self.conv(x)                                   # (B, C, T, F)
        y = y.permute(0, 2, 1, 3)                          # (B, T, C, F)
        y = y.reshape(batch, c.seq_len, c.seq_features)    # (B, T, C*F)
        if torch.onnx.is_in_onnx_export():
            h0 = self.h0_export
            _, h_n = self.rnn(y, h0 if c.rnn == "gru" else (h0, h0))
        else:
            _, h_n = self.rnn(y)
        if isinstance(h_n, tuple):                         # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        h = torch.cat([h_n[0], h_n[1]], dim=1)             # forward final, backward final: (B, 2H)
        return self.fc(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
