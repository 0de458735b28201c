"""The feature contract, pinned: a golden tensor, an independent numpy/scipy reference, torchaudio itself.

Regenerate the golden file only when the contract changes on purpose:
    python -m tests.features.test_features_contract --regenerate
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from pipeline.audio.features import load_contract, logmel, loudest_window, mel_spectrogram_transform, pad_samples
from pipeline.core.contract import FeatureContract
from tests.conftest import ROOT

FAMILIES = ("crnn", "embedding")
GOLDEN = {"crnn": Path(__file__).parent / "data" / "golden_chirp_logmel.npy",
          "embedding": Path(__file__).parent / "data" / "golden_chirp_logmel_embedding.npy"}


def family_contract(family: str) -> FeatureContract:
    return load_contract(ROOT / "pipeline" / "params" / "models" / f"{family}.toml")


def lcg_noise(n: int, seed: int = 12345) -> np.ndarray:
    """Uniform noise in [-1, 1) from a fixed LCG (Numerical Recipes constants): the same on every numpy."""
    out = np.empty(n)
    state = seed
    for k in range(n):
        state = (1664525 * state + 1013904223) % 2**32
        out[k] = state / 2**31 - 1.0
    return out


def chirp_clip(n: int = 16000) -> np.ndarray:
    """A deterministic test clip of ``n`` samples: 50 ms of exact silence (hits the power floor), then a log chirp
    100 Hz -> 7 kHz under a smooth envelope over low-level noise (bounds the per-frame dynamic range)."""
    sr = 16000
    dur = n / sr
    t = np.arange(n) / sr
    x = 0.3 * scipy.signal.chirp(t, f0=100.0, t1=dur, f1=7000.0, method="logarithmic")
    env = np.clip(np.sin(np.pi * (t - 0.1) / (dur - 0.2)), 0.0, None) * (t > 0.1) * (t < dur - 0.1)
    x = x * env + 0.003 * lcg_noise(n)
    x[:800] = 0.0
    return x.astype(np.float32)


def reference_logmel(audio: np.ndarray, c: FeatureContract) -> np.ndarray:
    """The contract written out with numpy/scipy in float64, without padding tricks or torchaudio:
    frame t = clip[hop*t : hop*t + win] * periodic Hann, |rfft(frame, n_fft)|^2, triangular mel filters with
    edges equally spaced in mel (HTK, or Slaney's: linear below 1 kHz, logarithmic above) between f_min and
    f_max, each scaled to unit area for Slaney normalisation, 10*log10(max(P, floor)) floored at the clip's
    maximum minus top_db, fixed normalisation."""
    x = np.asarray(audio, dtype=np.float64)
    window = scipy.signal.get_window("hann", c.win_length, fftbins=True)
    frames = np.lib.stride_tricks.sliding_window_view(x, c.win_length)[:: c.hop_length]
    assert frames.shape[0] == c.n_frames
    power = np.abs(np.fft.rfft(frames * window, n=c.n_fft, axis=-1)) ** 2  # (frames, n_fft/2+1)
    freqs = np.linspace(0.0, c.sample_rate / 2, c.n_fft // 2 + 1)
    if c.mel_scale == "htk":
        mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
        hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    else:
        step, knee, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
        mel = lambda f: np.where(f < knee, f / step, knee / step + np.log(np.maximum(f, 1e-9) / knee) / logstep)  # noqa: E731
        hz = lambda m: np.where(m < knee / step, m * step, knee * np.exp(logstep * (m - knee / step)))  # noqa: E731
    edges = hz(np.linspace(mel(c.f_min_hz), mel(c.f_max_hz), c.n_mels + 2))
    fb = np.zeros((freqs.size, c.n_mels))
    for m in range(c.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(rising, falling))
        if c.mel_norm == "slaney":
            fb[:, m] *= 2.0 / (hi - lo)
    db = 10.0 * np.log10(np.maximum(power @ fb, c.power_floor))
    if c.top_db > 0:
        db = np.maximum(db, db.max() - c.top_db)
    return ((db - c.norm_mean_db) / c.norm_std_db)[None, None].astype(np.float32)


@pytest.fixture(scope="module", params=FAMILIES)
def contract(request: pytest.FixtureRequest) -> FeatureContract:
    return family_contract(request.param)


def test_shape_dtype_and_exactly_n_frames(contract: FeatureContract) -> None:
    audio = np.zeros((3, contract.clip_samples), np.float32)
    out = logmel(audio, contract)
    f = 1 + (contract.clip_samples - 400) // 160
    assert out.shape == (3, 1, f, contract.n_mels) and out.dtype == np.float32 and out.flags.c_contiguous
    assert logmel(audio[0], contract).shape == (1, 1, f, contract.n_mels)
    assert pad_samples(contract) == (56, 56)


def test_silence_sits_exactly_on_the_power_floor(contract: FeatureContract) -> None:
    out = logmel(np.zeros(contract.clip_samples, np.float32), contract)
    floor = (10 * np.log10(contract.power_floor) - contract.norm_mean_db) / contract.norm_std_db
    np.testing.assert_allclose(out, floor, rtol=0, atol=1e-6)


def test_wrong_length_is_refused(contract: FeatureContract) -> None:
    n = contract.clip_samples
    with pytest.raises(ValueError, match=str(n)):
        logmel(np.zeros(n - 1, np.float32), contract)
    with pytest.raises(ValueError, match=str(n)):
        logmel(np.zeros((2, 2, n), np.float32), contract)


@pytest.mark.parametrize("family", FAMILIES)
def test_golden_chirp(family: str) -> None:
    contract = family_contract(family)
    golden = np.load(GOLDEN[family])
    out = logmel(chirp_clip(contract.clip_samples), contract)
    assert golden.shape == out.shape == (1, 1, contract.n_frames, contract.n_mels)
    # float32 FFTs differ by a few 1e-5 between CPU instruction sets (3.7e-5 measured on a machine other
    # than the one that wrote the golden); any change of the contract moves values by far more than 1e-4
    np.testing.assert_allclose(out, golden, rtol=0, atol=1e-4)


def test_independent_reference_agrees(contract: FeatureContract) -> None:
    clips = [chirp_clip(contract.clip_samples), (0.2 * lcg_noise(contract.clip_samples, seed=99)).astype(np.float32)]
    clips.append(np.roll(clips[0], 3000))
    batch = logmel(np.stack(clips), contract)
    for k, clip in enumerate(clips):
        ref = reference_logmel(clip, contract)
        np.testing.assert_allclose(batch[k : k + 1], ref, rtol=0, atol=1e-4)
        # the floor path is exercised too: the chirp's first 2 frames are pure silence, on the floor
    floor_db = max(10 * np.log10(contract.power_floor), float(batch[0].max()) * contract.norm_std_db
                   + contract.norm_mean_db - contract.top_db) if contract.top_db > 0 else 10 * np.log10(contract.power_floor)
    assert np.allclose(batch[0, 0, :2], (floor_db - contract.norm_mean_db) / contract.norm_std_db, atol=1e-5)
    assert not np.allclose(batch[0, 0, 3:], batch[0, 0, 3, 0])


def test_frame_t_covers_samples_hop_t_to_hop_t_plus_win(contract: FeatureContract) -> None:
    """A click at sample s lights frames t with 160t <= s < 160t + 400 and no others."""
    s = 5000
    x = np.zeros(contract.clip_samples, np.float32)
    x[s] = 1.0
    out = logmel(x, contract)[0, 0]
    lit = np.flatnonzero(out.max(axis=1) > out.min() + 1e-3)  # above the floor (or the top_db floor)
    expected = [t for t in range(contract.n_frames) if 160 * t <= s < 160 * t + 400]
    # the Hann window is zero at its first sample only
    expected = [t for t in expected if s != 160 * t]
    assert lit.tolist() == expected


def test_equals_torchaudio_melspectrogram(contract: FeatureContract) -> None:
    import torch

    x = np.stack([chirp_clip(contract.clip_samples), np.roll(chirp_clip(contract.clip_samples), 5000)])
    with torch.inference_mode():
        padded = torch.nn.functional.pad(torch.from_numpy(x), pad_samples(contract))
        p = mel_spectrogram_transform(contract)(padded)  # (n, mels, frames)
        ta = ((10 * torch.log10(torch.clamp(p, min=contract.power_floor)) - contract.norm_mean_db)
              / contract.norm_std_db).transpose(1, 2).unsqueeze(1).numpy()
    if contract.top_db > 0:
        ta = np.maximum(ta, ta.max(axis=(1, 2, 3), keepdims=True) - contract.top_db / contract.norm_std_db)
    assert ta.shape == (2, 1, contract.n_frames, contract.n_mels)  # torchaudio, center=False, on the padded clip
    np.testing.assert_allclose(logmel(x, contract), ta, rtol=0, atol=1e-5)


def test_batch_equals_one_by_one(contract: FeatureContract) -> None:
    clips = np.stack([np.roll(chirp_clip(contract.clip_samples), k * 1000) for k in range(5)])
    batch = logmel(clips, contract)
    for k in range(5):
        np.testing.assert_allclose(batch[k : k + 1], logmel(clips[k], contract), rtol=0, atol=1e-6)


def test_load_contract_reads_only_contract_keys(tmp_path: Path) -> None:
    c = family_contract("crnn")
    assert c.n_frames == 98 and c.n_mels == 64 and c.hop_length == 160 and c.win_length == 400
    e = load_contract()  # the schema defaults: the speech embedding's front end
    assert (e.n_mels, e.f_min_hz, e.f_max_hz, e.mel_scale, e.mel_norm, e.top_db) == (32, 60.0, 3800.0, "slaney", "slaney", 80.0)
    bad = tmp_path / "features.toml"
    bad.write_text("[features]\nn_frames = 101\n")
    from pipeline.core.cli import StageError

    with pytest.raises(StageError, match="101"):
        load_contract(bad)


def test_normalisation_is_roughly_standard_on_speechlike_clips(contract: FeatureContract) -> None:
    """The fixed constants put synthetic voiced clips in noise near zero mean, unit-ish spread."""
    from tests.features.conftest import synth_clip

    x = np.stack([synth_clip(ci, k, n=contract.clip_samples) for ci in range(3) for k in range(4)])
    out = logmel(x, contract)
    assert -1.0 < float(out.mean()) < 1.0
    assert 0.4 < float(out.std()) < 2.0


def test_loudest_window() -> None:
    a = np.zeros(40000, np.float32)
    a[25000:26000] = 0.5
    w, start = loudest_window(a, 16000)
    assert w.shape == (16000,) and start <= 25000 and start + 16000 >= 26000
    assert np.abs(w).sum() == pytest.approx(500.0)
    short = np.ones(1000, np.float32)
    w, start = loudest_window(short, 16000)
    assert w.shape == (16000,) and start == -7500 and w[7500:8500].sum() == 1000 and w.sum() == 1000


if __name__ == "__main__" and "--regenerate" in sys.argv:
    for family, path in GOLDEN.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        c = family_contract(family)
        np.save(path, logmel(chirp_clip(c.clip_samples), c))
        print(f"wrote {path}")
