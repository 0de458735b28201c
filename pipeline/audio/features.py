"""Log-Mel features: the one implementation of the feature contract, and the packed feature set.

Contract (docs/design.md "Feature contract"): mono float32 clip of exactly ``clip_samples`` samples ->
zero-pad (n_fft - win_length) / 2 samples on each side -> power spectrogram (n_fft 512, Hann window of 400
centred in the 512 frame, hop 160, no centring) -> mel filterbank -> exactly ``n_frames`` frames ->
10*log10(max(P, power_floor)) -> (dB - norm_mean_db) / norm_std_db -> float32 (n, 1, n_frames, n_mels).

Also here: reading dataset clips, the hash-based train/val/test split, and :class:`FeatureSet`, the reader
of a features folder (``features.npy`` + ``index.jsonl`` + ``manifest.json``) written by
``pipeline.stages.features``.

    python -c "from pipeline.audio.features import FeatureSet; print(FeatureSet.open('build/features').classes)"
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import params
from pipeline.core.cli import StageError
from pipeline.core.contract import ContractMismatch, FeatureContract

CONTRACT_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FeatureContract))
SPLITS: tuple[str, ...] = ("train", "val", "test")
CHUNK_CLIPS = 32



class FeatureError(StageError):
    """A bad clip, dataset or features folder: the message names the file and the fix."""


# ---- the contract -----------------------------------------------------------------------------


def load_contract(path: str | os.PathLike[str] | None = None) -> FeatureContract:
    """The feature contract of a parameter file's ``[features]`` section (or of the schema defaults when
    ``path`` is None), validated against ``schemas/params/features.schema.json``."""
    try:
        values = params.resolve("features", [path] if path is not None else [])
        return FeatureContract.from_mapping({k: v for k, v in values.items() if k in CONTRACT_KEYS})
    except (params.ParamsError, ContractMismatch, TypeError) as e:
        raise FeatureError(f"{path or 'schemas/params/features.schema.json'}: {e}; fix the contract keys") from None


def pad_samples(contract: FeatureContract) -> tuple[int, int]:
    """Zero padding (left, right) that puts frame t's window over clip samples [hop*t, hop*t + win)."""
    total = contract.n_fft - contract.win_length
    return total // 2, total - total // 2


@functools.lru_cache(maxsize=8)
def _kernels(contract: FeatureContract) -> tuple[Any, Any]:
    """(Hann window of win_length, mel filterbank (n_fft // 2 + 1, n_mels)): what MelSpectrogram builds."""
    import torch
    import torchaudio

    window = torch.hann_window(contract.win_length)  # periodic, torchaudio's default window_fn
    fb = torchaudio.functional.melscale_fbanks(
        n_freqs=contract.n_fft // 2 + 1, f_min=contract.f_min_hz, f_max=contract.f_max_hz, n_mels=contract.n_mels,
        sample_rate=contract.sample_rate, norm=_mel_norm(contract), mel_scale=contract.mel_scale,
    )
    return window, fb


def _mel_norm(contract: FeatureContract) -> str | None:
    return None if contract.mel_norm == "none" else contract.mel_norm


def mel_spectrogram_transform(contract: FeatureContract) -> Any:
    """The torchaudio MelSpectrogram the contract is defined by (applied to the zero-padded clip)."""
    import torch
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=contract.sample_rate, n_fft=contract.n_fft, win_length=contract.win_length,
        hop_length=contract.hop_length, f_min=contract.f_min_hz, f_max=contract.f_max_hz, n_mels=contract.n_mels,
        window_fn=torch.hann_window, power=2.0, center=False, norm=_mel_norm(contract), mel_scale=contract.mel_scale,
    )


def logmel(audio: np.ndarray, contract: FeatureContract) -> np.ndarray:
    """Float32 clips ``(n, clip_samples)`` (or one 1-D clip) -> normalised log-Mel float32 ``(n, 1, n_frames, n_mels)``.

    The power spectrogram is exactly torchaudio's ``MelSpectrogram(power=2, center=False)`` (same
    ``torch.stft`` call, same window, same ``melscale_fbanks``; a test holds them within 1e-5), computed as
    re^2 + im^2 rather than ``abs().pow(2)`` and with the filterbank applied straight into (time, mel) order:
    measured about 1.3x faster per clip.
    """
    import torch

    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != contract.clip_samples:
        raise ValueError(
            f"logmel expects audio of shape (n, {contract.clip_samples}) or ({contract.clip_samples},), "
            f"got {np.shape(audio)}; crop or pad each clip to {contract.clip_samples} samples first"
        )
    window, fb = _kernels(contract)
    left, right = pad_samples(contract)
    out = np.empty((a.shape[0], 1, contract.n_frames, contract.n_mels), np.float32)
    with torch.inference_mode():
        # Chunks of CHUNK_CLIPS keep the complex spectrogram in cache: large batches measured up to 2x slower.
        for s in range(0, a.shape[0], CHUNK_CLIPS):
            x = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(a[s : s + CHUNK_CLIPS])), (left, right))
            spec = torch.stft(x, n_fft=contract.n_fft, hop_length=contract.hop_length, win_length=contract.win_length,
                              window=window, center=False, normalized=False, onesided=True, return_complex=True)
            if spec.shape[-1] != contract.n_frames:
                raise ContractMismatch(f"extraction gave {spec.shape[-1]} frames, the contract says {contract.n_frames}")
            power = spec.real.square() + spec.imag.square()  # (n, freqs, frames)
            mel = torch.einsum("nft,fm->ntm", power, fb)  # (n, frames, mels)
            db = 10.0 * torch.log10(torch.clamp(mel, min=contract.power_floor))
            if contract.top_db > 0:  # nothing more than top_db below the clip's loudest bin
                db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - contract.top_db)
            out[s : s + CHUNK_CLIPS, 0] = ((db - contract.norm_mean_db) / contract.norm_std_db).numpy()
    return out


def loudest_window(audio: np.ndarray, n_samples: int) -> tuple[np.ndarray, int]:
    """The ``n_samples`` window of highest energy (first one on ties) and its start; a shorter input is
    zero-padded on both sides (start is then negative: minus the left padding)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.size <= n_samples:
        left = (n_samples - a.size) // 2
        return np.pad(a, (left, n_samples - a.size - left)), -left
    c = np.concatenate(([0.0], np.cumsum(a.astype(np.float64) ** 2)))
    start = int(np.argmax(c[n_samples:] - c[:-n_samples]))
    return a[start : start + n_samples].copy(), start


# ---- reading clips ----------------------------------------------------------------------------


def _pcm16_data_span(head: bytes) -> tuple[int, int, int] | None:
    """(sample rate, data offset, data bytes) if ``head`` is a plain mono 16-bit PCM RIFF/WAVE, else None."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt " and size >= 16:
            fmt = struct.unpack_from("<HHIIHH", head, pos + 8)
        elif cid == b"data":
            if fmt is None or fmt[0] != 1 or fmt[1] != 1 or fmt[5] != 16:
                return None
            return fmt[2], pos + 8, size
        pos += 8 + size + (size & 1)
    return None


def read_clip(path: Path, contract: FeatureContract, out: np.ndarray | None = None) -> np.ndarray:
    """One dataset clip as float32 ``(clip_samples,)`` in [-1, 1]; refuses any other rate, channel count or length.

    Plain mono PCM_16 files (what the dataset stage writes) are parsed directly, which is several times faster
    than libsndfile for 32 kB files and gives the same values (int16 / 32768); anything else goes through soundfile.
    """
    buf = np.empty(contract.clip_samples, np.float32) if out is None else out
    fix = f"the dataset must hold {contract.sample_rate} Hz mono clips of exactly {contract.clip_samples} samples; rebuild it (make dataset)"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FeatureError(f"{path}: cannot read clip ({e.strerror}); {fix}") from None
    span = _pcm16_data_span(data[:4096])
    if span is not None and span[1] + span[2] <= len(data):
        rate, offset, nbytes = span
        n = nbytes // 2
        if rate != contract.sample_rate or n != contract.clip_samples:
            raise FeatureError(f"{path}: {rate} Hz, {n} samples; {fix}")
        np.multiply(np.frombuffer(data, "<i2", count=n, offset=offset), np.float32(1 / 32768), out=buf)
        return buf
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate != contract.sample_rate or f.channels != 1 or f.frames != contract.clip_samples:
                raise FeatureError(f"{path}: {f.samplerate} Hz, {f.channels} channel(s), {f.frames} samples; {fix}")
            f.read(contract.clip_samples, dtype="float32", out=buf)
    except sf.LibsndfileError as e:
        raise FeatureError(f"{path}: not a readable WAV ({e}); {fix}") from None
    return buf


# ---- splits -----------------------------------------------------------------------------------


def split_of(clip_path: str, val_fraction: float, test_fraction: float) -> str:
    """``train``/``val``/``test`` from the SHA-256 of the clip path: stable when clips are added or removed."""
    u = int.from_bytes(hashlib.sha256(clip_path.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


# ---- the packed feature set -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureSet:
    """A features folder: ``x`` memmap (N, 1, n_frames, n_mels), ``rows`` (index.jsonl), classes and contract."""

    root: Path
    x: np.ndarray
    rows: list[dict[str, Any]]
    classes: list[str]
    contract: FeatureContract
    manifest: dict[str, Any]

    @classmethod
    def open(cls, features_dir: str | os.PathLike[str]) -> FeatureSet:
        root = Path(features_dir)
        fix = f"rebuild it: python -m pipeline.stages.features --dataset build/dataset --out {root}"
        man_path = root / "manifest.json"
        try:
            manifest = json.loads(man_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FeatureError(f"{man_path}: not found (no finished features folder); {fix}") from None
        except json.JSONDecodeError as e:
            raise FeatureError(f"{man_path}: not valid JSON ({e}); {fix}") from None
        try:
            contract = FeatureContract.from_mapping(manifest["contract"])
            classes = list(manifest["classes"])
        except (KeyError, TypeError, ContractMismatch) as e:
            raise FeatureError(f"{man_path}: no usable contract/classes ({e}); {fix}") from None
        try:
            with (root / "index.jsonl").open(encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            x = np.load(root / "features.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise FeatureError(f"{root}: incomplete features folder ({e}); {fix}") from None
        expected = (len(rows), *contract.input_shape[1:])
        if x.shape != expected or x.dtype != np.float32:
            raise FeatureError(f"{root / 'features.npy'}: {x.dtype} {x.shape}, index.jsonl and the contract say float32 {expected}; {fix}")
        return cls(root=root, x=x, rows=rows, classes=classes, contract=contract, manifest=manifest)

    def __len__(self) -> int:
        return len(self.rows)

    def rows_in(self, split: str) -> list[dict[str, Any]]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [r for r in self.rows if r["split"] == split]


def balanced_rows(rows: Sequence[dict[str, Any]], n_classes: int, count: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``count`` rows, class-balanced and deterministic.

    Each class's rows are shuffled by a generator made from ``(seed, class_index)`` and the classes are then
    taken round-robin, so any prefix of the result is as balanced as the rows allow; a class that runs out
    leaves its share to the others.
    """
    queues: list[list[dict[str, Any]]] = []
    for ci in range(n_classes):
        mine = sorted((r for r in rows if r["label"] == ci), key=lambda r: r["i"])
        order = np.random.default_rng((seed, ci)).permutation(len(mine))
        queues.append([mine[j] for j in order])
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < count and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < count:
                out.append(q[depth])
        depth += 1
    return out
