"""The feature contract: the one description of how audio becomes a model input.

Training, export, calibration, board inputs and streaming detection all read it from
``features.toml`` (or from the checkpoint / ONNX metadata that embeds it) and refuse to mix contracts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any


class ContractMismatch(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class FeatureContract:
    """The values come from ``[features]`` parameters (defaults: ``schemas/params/features.schema.json``;
    ``pipeline.audio.features.load_contract``) or from the metadata of a checkpoint or ONNX file."""

    sample_rate: int
    clip_samples: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    n_frames: int
    f_min_hz: float
    f_max_hz: float
    power_floor: float
    norm_mean_db: float
    norm_std_db: float
    mel_scale: str
    mel_norm: str
    top_db: float

    def __post_init__(self) -> None:
        if self.mel_scale not in ("htk", "slaney") or self.mel_norm not in ("none", "slaney"):
            raise ContractMismatch(f"feature contract: mel_scale {self.mel_scale!r} must be 'htk' or 'slaney' and "
                                   f"mel_norm {self.mel_norm!r} 'none' or 'slaney'")
        frames = 1 + (self.clip_samples - self.win_length) // self.hop_length
        if frames != self.n_frames:
            raise ContractMismatch(
                f"feature contract is inconsistent: {self.clip_samples} samples with window "
                f"{self.win_length} and hop {self.hop_length} give {frames} frames, not n_frames={self.n_frames}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 1, self.n_frames, self.n_mels)

    @property
    def input_bytes(self) -> int:
        return 4 * self.n_frames * self.n_mels

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FeatureContract:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted(names - set(data))
        if unknown or missing:
            raise ContractMismatch(f"feature contract: unknown keys {unknown}, missing keys {missing} (made by "
                                   "another version of the toolchain?); rebuild the features and the model")
        return cls(**dict(data))

    def check_compatible(self, other: FeatureContract, what: str = "model") -> None:
        """Raise ContractMismatch naming every field that differs."""
        diffs = [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
        if diffs:
            raise ContractMismatch(
                f"feature contract of the {what} differs from the one in use ({'; '.join(diffs)}); "
                "rebuild the features and the model with the same features.toml"
            )
