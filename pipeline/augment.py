"""Augmentation transforms (lhotse style): frozen dataclasses with ``sample(rng) -> dict`` and
``apply(x, sample_rate, params) -> y``.

``sample`` draws every random choice into a plain JSON-able dict (recorded per clip in
``clips.jsonl``); ``apply`` is deterministic given that dict, so one clip can be regenerated from its
manifest line alone. Everything is vectorised numpy on float32 (no per-sample Python loops):

- ``Shift``: move the signal in time (zero fill), ``shift_ms``.
- ``Stretch``: tempo change without pitch change (phase vocoder), ``rate`` > 1 is faster.
- ``Pitch``: pitch shift without tempo change: phase vocoder by 1/r, then band-limited FFT resampling
  back to the original length (r = 2^(semitones/12), semitones quantised to 0.05). One rfft/irfft
  whatever the ratio (torchaudio's pitch_shift with arbitrary float steps costs seconds per clip).
- ``Noise``: mix noise at an SNR from a list: FONDO seed audio at a drawn offset, or synthetic
  white/pink/brown noise from a drawn seed.
- ``Reverb``: convolve with a room impulse response: one of the given RIRs, or a synthesised one
  (direct path + exponentially decaying noise tail with a drawn RT60 and direct-to-reverberant ratio).
- ``Gain``: level change in dB.

Example (the dataset stage uses these)::

    python -m pipeline.dataset --params pipeline/params/default/dataset.toml --seeds data/demo-seeds --out build/dataset
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Params = dict[str, Any]

# Phase vocoder analysis: 32 ms Hann window, 75 % overlap at 16 kHz.
PV_N_FFT = 512
PV_HOP = 128
PITCH_STEP_SEMITONES = 0.05
NOISE_COLOURS = ("white", "pink", "brown")
RT60_RANGE_S = (0.2, 0.8)  # small rooms to living rooms / offices
DRR_RANGE_DB = (0.0, 12.0)  # direct-to-reverberant energy ratio
PREDELAY_RANGE_MS = (2.0, 12.0)  # direct path to first reflections


# ---- signal helpers --------------------------------------------------------------------------------


@functools.cache
def _pv_window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(PV_N_FFT) / PV_N_FFT)).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float) -> np.ndarray:
    """Phase-vocoder tempo change: output length round(len(x) / rate), pitch unchanged.

    Phase is accumulated with unit phasors (cumulative product) instead of angles: no arctan/exp,
    exact modulo 2*pi, fully vectorised.
    """
    x = np.asarray(x, dtype=np.float32)
    out_len = round(x.size / rate)
    if rate == 1.0:
        return x.copy()
    win = _pv_window()
    half = PV_N_FFT // 2
    xp = np.pad(x, (half, half + PV_HOP))
    frames = sliding_window_view(xp, PV_N_FFT)[::PV_HOP] * win
    spec = np.fft.rfft(frames, axis=1).astype(np.complex64)
    n_in = spec.shape[0]
    steps = np.arange(0.0, n_in - 1, rate)
    i = steps.astype(np.int64)
    a = (steps - i).astype(np.float32)[:, None]
    mag = np.abs(spec)
    out_mag = (1.0 - a) * mag[i] + a * mag[i + 1]
    tiny = np.float32(1e-12)
    u = spec[i + 1] * np.conj(spec[i])
    au = np.abs(u)
    u = np.where(au > tiny, u / np.maximum(au, tiny), np.complex64(1))
    p0 = np.where(mag[0] > tiny, spec[0] / np.maximum(mag[0], tiny), np.complex64(1))
    phasor = np.cumprod(np.concatenate([p0[None], u[:-1]]), axis=0)
    phasor /= np.maximum(np.abs(phasor), tiny)
    y_frames = np.fft.irfft(out_mag * phasor, PV_N_FFT, axis=1).astype(np.float32) * win
    n = y_frames.shape[0]
    k = PV_N_FFT // PV_HOP
    out = np.zeros((n + k - 1) * PV_HOP, dtype=np.float32)
    wsum = np.zeros_like(out)
    w2 = win * win
    for j in range(k):  # k = 4 shifted block sums: overlap-add without a per-frame loop
        out[j * PV_HOP: j * PV_HOP + n * PV_HOP] += y_frames[:, j * PV_HOP:(j + 1) * PV_HOP].reshape(-1)
        wsum[j * PV_HOP: j * PV_HOP + n * PV_HOP] += np.tile(w2[j * PV_HOP:(j + 1) * PV_HOP], n)
    out /= np.maximum(wsum, np.float32(1e-3))
    y = out[half: half + out_len]
    return np.pad(y, (0, out_len - y.size)) if y.size < out_len else y


def pitch_ratio(semitones: float) -> float:
    """Frequency ratio of a pitch shift of ``semitones``."""
    return float(2.0 ** (semitones / 12.0))


def fft_resample(x: np.ndarray, n_out: int) -> np.ndarray:
    """Band-limited resampling to ``n_out`` samples by cropping / zero-padding the spectrum.

    Exact for band-limited periodic signals; the first and last 64 samples are faded first so the
    implied wrap-around adds no ringing (callers keep margins outside the part they use)."""
    x = np.asarray(x, dtype=np.float32)
    n = x.size
    if n_out == n:
        return x
    fade = min(64, n // 4)
    if fade:
        ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)).astype(np.float32)
        x = x.copy()
        x[:fade] *= ramp
        x[n - fade:] *= ramp[::-1]
    spec = np.fft.rfft(x)
    k = n_out // 2 + 1
    if k <= spec.size:
        spec = spec[:k].copy()
        if n_out % 2 == 0:  # the new Nyquist bin must be real
            spec[-1] = spec[-1].real
    else:
        spec = np.pad(spec, (0, k - spec.size))
    return (np.fft.irfft(spec, n_out) * (n_out / n)).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad at the end to exactly n samples."""
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def coloured_noise(n: int, colour: str, seed: int) -> np.ndarray:
    """Unit-RMS white / pink (1/f power) / brown (1/f^2 power) noise, deterministic from seed."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    if colour == "white":
        y = white
    else:
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        spec *= f ** (-0.5 if colour == "pink" else -1.0)
        spec[0] = 0.0
        y = np.fft.irfft(spec, n)
    y = y / max(np.sqrt(np.mean(y * y)), 1e-12)
    return y.astype(np.float32)


def synth_rir(rt60_s: float, drr_db: float, predelay_ms: float, seed: int, sample_rate: int) -> np.ndarray:
    """A plausible room impulse response: unit direct path at t=0, then after the pre-delay an
    exponentially decaying Gaussian noise tail (60 dB down at rt60_s) whose energy is set by drr_db."""
    rng = np.random.default_rng(seed)
    n_tail = int(rt60_s * sample_rate)
    pre = int(predelay_ms * sample_rate / 1000)
    t = np.arange(n_tail) / sample_rate
    tail = rng.standard_normal(n_tail) * np.exp(-6.907755 * t / rt60_s)  # ln(1000): 60 dB amplitude decay
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / max(np.sum(tail * tail), 1e-12))
    h = np.zeros(pre + n_tail, dtype=np.float64)
    h[0] = 1.0
    h[pre:] += tail
    return h.astype(np.float32)


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Causal FFT convolution truncated to len(x)."""
    n = x.size + h.size - 1
    nfft = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[: x.size]
    return y.astype(np.float32)


def _u(rng: np.random.Generator, low: float, high: float, ndigits: int = 4) -> float:
    return round(float(rng.uniform(low, high)), ndigits)


# ---- transforms --------------------------------------------------------------------------------------
# Each sample() draws the same number of values whether or not the transform fires, so changing one
# probability does not reshuffle the other draws.


@dataclasses.dataclass(frozen=True)
class Shift:
    p: float
    max_shift_ms: float

    def sample(self, rng: np.random.Generator) -> Params:
        fire = rng.random() < self.p
        shift_ms = _u(rng, -self.max_shift_ms, self.max_shift_ms, 2)
        return {"shift_ms": shift_ms if fire else 0.0}

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        s = round(params["shift_ms"] * sample_rate / 1000)
        if s == 0:
            return x
        y = np.zeros_like(x)
        if s > 0:
            y[s:] = x[:-s]
        else:
            y[:s] = x[-s:]
        return y


@dataclasses.dataclass(frozen=True)
class Stretch:
    p: float
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> Params:
        fire = rng.random() < self.p
        rate = _u(rng, self.low, self.high)
        return {"rate": rate if fire else 1.0}

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        return time_stretch(x, float(params["rate"]))


@dataclasses.dataclass(frozen=True)
class Pitch:
    p: float
    max_semitones: float

    def sample(self, rng: np.random.Generator) -> Params:
        fire = rng.random() < self.p
        steps = round(float(rng.uniform(-self.max_semitones, self.max_semitones)) / PITCH_STEP_SEMITONES)
        return {"semitones": round(steps * PITCH_STEP_SEMITONES, 4) if fire else 0.0}

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        return pitch_and_tempo(x, float(params["semitones"]), 1.0)


def pitch_and_tempo(x: np.ndarray, semitones: float, rate: float) -> np.ndarray:
    """Pitch shift by ``semitones`` and tempo change by ``rate`` with ONE phase-vocoder pass:
    stretch by rate / r (pitch kept, length * r / rate), then resample to round(len / rate) samples,
    which raises the pitch by r."""
    r = pitch_ratio(semitones) if semitones else 1.0
    out_len = round(x.size / rate)
    pv_rate = rate / r
    y = time_stretch(x, pv_rate) if pv_rate != 1.0 else np.asarray(x, dtype=np.float32)
    if r != 1.0:
        y = fft_resample(y, out_len)
    return fit_length(y, out_len)


@dataclasses.dataclass(frozen=True)
class Noise:
    """Additive noise at an SNR (dB, relative to the power of the whole input).

    ``sources`` are FONDO recordings (float32, at the working rate); empty -> synthetic noise only."""

    p: float
    snr_list_db: tuple[float, ...]
    clip_samples: int
    sources: tuple[np.ndarray, ...] = dataclasses.field(default=(), repr=False, compare=False)

    def sample(self, rng: np.random.Generator) -> Params:
        fire = rng.random() < self.p
        snr_db = float(self.snr_list_db[int(rng.integers(len(self.snr_list_db)))])
        if self.sources:
            lengths = np.array([s.size for s in self.sources], dtype=np.float64)
            k = int(rng.choice(len(self.sources), p=lengths / lengths.sum()))
            offset = int(rng.integers(0, max(1, self.sources[k].size - self.clip_samples + 1)))
            drawn: Params = {"snr_db": snr_db, "kind": "fondo", "source": k, "offset": offset}
        else:
            colour = NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))]
            drawn = {"snr_db": snr_db, "kind": colour, "noise_seed": int(rng.integers(2**31))}
        return drawn if fire else {"snr_db": None}

    def noise_for(self, n: int, params: Params) -> np.ndarray:
        if params["kind"] == "fondo":
            src = self.sources[params["source"]]
            if src.size < params["offset"] + n:  # short FONDO recording: loop it
                src = np.tile(src, -(-(params["offset"] + n) // src.size))
            return src[params["offset"]: params["offset"] + n]
        return coloured_noise(n, params["kind"], params["noise_seed"])

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        if params.get("snr_db") is None:
            return x
        noise = self.noise_for(x.size, params)
        ps, pn = power(x), power(noise)
        if ps <= 0.0 or pn <= 0.0:
            return x
        scale = np.sqrt(ps / (pn * 10.0 ** (params["snr_db"] / 10.0)))
        return (x + np.float32(scale) * noise).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Reverb:
    """Convolution with a room impulse response; output RMS equals input RMS.

    ``rirs``: loaded RIRs (direct path first); empty -> synthesised RIRs."""

    p: float
    rirs: tuple[np.ndarray, ...] = dataclasses.field(default=(), repr=False, compare=False)

    def sample(self, rng: np.random.Generator) -> Params:
        fire = rng.random() < self.p
        if self.rirs:
            drawn: Params = {"kind": "file", "rir": int(rng.integers(len(self.rirs)))}
        else:
            drawn = {"kind": "synthetic", "rt60_s": _u(rng, *RT60_RANGE_S, 3), "drr_db": _u(rng, *DRR_RANGE_DB, 2),
                     "predelay_ms": _u(rng, *PREDELAY_RANGE_MS, 2), "rir_seed": int(rng.integers(2**31))}
        return drawn if fire else {"kind": None}

    def rir_for(self, params: Params, sample_rate: int) -> np.ndarray:
        if params["kind"] == "file":
            return self.rirs[params["rir"]]
        return synth_rir(params["rt60_s"], params["drr_db"], params["predelay_ms"], params["rir_seed"], sample_rate)

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        if params.get("kind") is None:
            return x
        y = convolve(x, self.rir_for(params, sample_rate))
        px, py = power(x), power(y)
        return (y * np.float32(np.sqrt(px / py))).astype(np.float32) if py > 0 else y


@dataclasses.dataclass(frozen=True)
class Gain:
    low_db: float
    high_db: float

    def sample(self, rng: np.random.Generator) -> Params:
        return {"gain_db": _u(rng, self.low_db, self.high_db, 2)}

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        return (x * np.float32(10.0 ** (params["gain_db"] / 20.0))).astype(np.float32)


def prepare_rir(h: np.ndarray, max_samples: int) -> np.ndarray:
    """Put a measured RIR's direct path (its largest sample) at t=0 and cap its length."""
    h = np.asarray(h, dtype=np.float32)
    start = int(np.argmax(np.abs(h)))
    h = h[start: start + max_samples]
    return h / max(float(np.max(np.abs(h))), 1e-12)


def protect_clipping(x: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale down (never clip) if the mix would exceed ``peak``."""
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * np.float32(peak / m)).astype(np.float32) if m > peak else x


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """Measured SNR of a mix's parts, dB."""
    return 10.0 * float(np.log10(power(signal) / max(power(noise), 1e-30)))

