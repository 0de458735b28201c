"""Augmentation transforms (lhotse style): frozen dataclasses with ``sample(rng) -> dict`` and
``apply(x, sample_rate, params) -> y``.

``sample`` draws every random choice into a plain JSON-able dict (recorded per clip in
``clips.jsonl``); ``apply`` is deterministic given that dict, so one clip can be regenerated from its
manifest line alone. Everything is vectorised numpy on float32 (no per-sample Python loops):

- ``Shift``: move the signal in time (zero fill), ``shift_ms``.
- ``Stretch``: tempo change without pitch change (phase vocoder), ``rate`` > 1 is faster.
- ``Pitch``: pitch shift without tempo change, in the same phase-vocoder pass: each synthesis frame is
  resampled in the frequency domain from 512 to m samples (r = 512 / m, m a multiple of 4, so the
  drawn semitones are quantised to about 0.14). No whole-signal resampler (torchaudio's pitch_shift with arbitrary float
  steps costs seconds per clip).
- ``Noise``: mix noise at an SNR from a list: FONDO seed audio at a drawn offset, or synthetic
  white/pink/brown noise cut at a drawn offset from a fixed 131 s bank per colour.
- ``Reverb``: convolve with a room impulse response: one of the given RIRs, or one of 256 fixed
  synthetic rooms (direct path + exponentially decaying noise tail; RT60 0.2-0.8 s, direct-to-reverberant
  ratio 0-12 dB, pre-delay 2-12 ms).
- ``Gain``: level change in dB.
- ``FormantWarp``: vocal-tract-length perturbation (VTLP): the short-time spectrum is warped along
  frequency by a factor ``alpha`` (piecewise linear, Nyquist fixed), moving formants and harmonics
  together, like a speaker with a shorter (alpha > 1) or longer (alpha < 1) vocal tract.
- ``Channel``: what an unknown microphone, room and line do, each with its own probability: a microphone's
  response (high-pass at 60-300 Hz and a smooth random +-6 dB colouring), a telephone band (300-3400 Hz), a
  round trip through 8 kHz or 11.025 kHz, a level change (+-12 dB), and 8-bit sample coding (mu-law or
  linear). The spectral parts are one FFT multiply.

Example (the dataset stage uses these)::

    python -m pipeline.stages.dataset --seeds data/demo-seeds --out build/dataset
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
NOISE_COLOURS = ("white", "pink", "brown")
NOISE_BANK_SAMPLES = 1 << 21  # 131 s at 16 kHz per colour
NOISE_BANK_SEED = 20261201
RT60_RANGE_S = (0.2, 0.8)  # small rooms to living rooms / offices
DRR_RANGE_DB = (0.0, 12.0)  # direct-to-reverberant energy ratio
PREDELAY_RANGE_MS = (2.0, 12.0)  # direct path to first reflections
SYNTH_RIR_ROOMS = 256  # synthetic rooms to draw from (their spectra are cached, so reverb stays cheap)
SYNTH_RIR_BANK_SEED = 20251123


# ---- signal helpers --------------------------------------------------------------------------------


@functools.cache
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window of length n (float32)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def pitch_frame_length(semitones: float) -> int:
    """Synthesis frame length m for a pitch shift: each 512-sample frame is resampled to m samples,
    so the realised frequency ratio is 512 / m. m is a multiple of 4 so the output hop m / 4 is a whole
    number of samples (steps of about 0.14 semitones near 0)."""
    return 4 * round(PV_N_FFT / 4 / 2.0 ** (semitones / 12.0))


def realised_semitones(semitones: float) -> float:
    """The pitch shift actually applied for a requested one (quantised to a whole frame length)."""
    return round(12.0 * float(np.log2(PV_N_FFT / pitch_frame_length(semitones))), 4)


def pitch_ratio(semitones: float) -> float:
    """Frequency ratio applied for a pitch shift of ``semitones``."""
    return PV_N_FFT / pitch_frame_length(semitones)


@dataclasses.dataclass(frozen=True)
class Spectra:
    """Analysis STFT of a signal (512-sample Hann frames every 128 samples, frame k centred on sample
    128 k), stored as magnitudes and unit phasors so many phase-vocoder passes can reuse it."""

    mag: np.ndarray  # (n_frames, 257) float32
    phasor: np.ndarray  # (n_frames, 257) complex64, |.| = 1 (1 where the bin is silent)
    step: np.ndarray  # (n_frames - 1, 257) complex64: phase advance from frame k to k + 1, phasor[k+1] / phasor[k]
    advance: np.ndarray  # (n_frames - 1, 257) float32: the same advance in radians, unwrapped around the bin's
    #                      expected advance (what a frequency warp scales)

    @property
    def n_frames(self) -> int:
        return int(self.mag.shape[0])


def analyse(x: np.ndarray) -> Spectra:
    half = PV_N_FFT // 2
    xp = np.pad(np.asarray(x, dtype=np.float64), (half, half + PV_HOP))
    # float64 frames: numpy's pocketfft is several times slower on float32 input here
    frames = sliding_window_view(xp, PV_N_FFT)[::PV_HOP] * _hann(PV_N_FFT).astype(np.float64)
    spec = np.fft.rfft(frames, axis=1)
    mag = np.abs(spec)
    tiny = 1e-12
    phasor = np.where(mag > tiny, spec / np.maximum(mag, tiny), 1.0)
    step = phasor[1:] * np.conj(phasor[:-1])
    omega = 2.0 * np.pi * PV_HOP * np.arange(mag.shape[1]) / PV_N_FFT
    advance = np.angle(step * np.exp(-1j * omega)) + omega
    return Spectra(mag.astype(np.float32), phasor.astype(np.complex64), step.astype(np.complex64),
                   advance.astype(np.float32))


@functools.cache
def _ola_edges(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of squared synthesis windows over the first and last 3 hops of an overlap-add at hop m/4
    (in between it is exactly 3/2 for a periodic Hann window)."""
    h = m // 4
    b = (_hann(m) ** 2).reshape(4, h)
    head = np.concatenate([b[0], b[0] + b[1], b[0] + b[1] + b[2]])
    tail = np.concatenate([b[1] + b[2] + b[3], b[2] + b[3], b[3]])
    return head.astype(np.float32), tail.astype(np.float32)


def synthesise(sp: Spectra, start: float, rate: float, semitones: float, out_len: int,
               alpha: float = 1.0, sample_rate: int = 16000) -> np.ndarray:
    """Phase-vocoder synthesis from precomputed spectra: ``out_len`` samples whose sample 0 is input
    sample ``start`` (may be fractional), tempo changed by ``rate`` (> 1 faster), pitch by ``semitones``,
    formants warped by ``alpha`` (the VTLP map of ``formant_warp``, applied to the analysis spectrum).

    Frames are read at fractional positions ``rate / r`` apart (magnitudes interpolated; phase accumulated
    as a cumulative product of unit phasors: exact modulo 2*pi, no arctan/exp; with a warp, as a sum of
    the source bins' advances scaled by the warp's frequency ratio). The pitch shift by
    r = 512 / m resamples every synthesis frame to m samples in the frequency domain (band-limited:
    spectrum truncated / zero-padded); frames are overlap-added at hop m / 4. Batched over frames.
    """
    m = pitch_frame_length(semitones)
    r = PV_N_FFT / m
    hop_out = m // 4
    n_out = -(-(out_len + m) // hop_out) + 1
    steps = start / PV_HOP + np.arange(n_out) * (rate / r)
    steps = steps[(steps >= 0) & (steps < sp.n_frames - 1)]
    if steps.size < 2:
        return np.zeros(out_len, dtype=np.float32)
    lead = round((start / PV_HOP - steps[0]) * (-r / rate))  # output frames skipped before the input starts
    i = steps.astype(np.int64)
    a = (steps - i).astype(np.float32)[:, None]
    k_out = m // 2 + 1
    k_in = min(k_out, sp.mag.shape[1])
    if alpha == 1.0:
        phasor = np.cumprod(np.concatenate([sp.phasor[i[0]][None], sp.step[i[:-1]]]), axis=0)
        mag = (1.0 - a) * sp.mag[i, :k_in] + a * sp.mag[i + 1, :k_in]
        spec = mag * phasor[:, :k_in]
    else:
        wi, wa, wj, ratio = (v[:k_in] for v in _warp_plan(float(alpha), sample_rate))
        mag_t = (1.0 - a) * sp.mag[i] + a * sp.mag[i + 1]
        mag = mag_t[:, wi]
        mag += wa * (mag_t[:, wi + 1] - mag)
        # same spectral energy as unwarped (as formant_warp keeps the RMS): a squeezed spectrum holds less
        e_in, e_out = float(np.vdot(mag_t[:, :k_in], mag_t[:, :k_in])), float(np.vdot(mag, mag))
        if e_out > 0.0:
            mag *= np.float32(np.sqrt(e_in / e_out))
        phase = np.empty(mag.shape, dtype=np.float32)
        phase[0] = np.angle(sp.phasor[i[0], wj])
        phase[1:] = sp.advance[i[:-1]][:, wj] * ratio
        np.cumsum(phase, axis=0, out=phase)
        spec = np.empty(mag.shape, dtype=np.complex64)
        spec.real = mag * np.cos(phase)
        spec.imag = mag * np.sin(phase)
    if k_out > k_in:
        spec = np.pad(spec, ((0, 0), (0, k_out - k_in)))
    swin = _hann(m)
    y_frames = np.fft.irfft(spec, m, axis=1).astype(np.float32) * (swin * np.float32(m / PV_N_FFT))
    n = y_frames.shape[0]
    # overlap-add at hop m/4: 4 shifted block sums instead of a per-frame loop
    out = np.zeros((n + 3) * hop_out, dtype=np.float32)
    for q in range(4):
        out[q * hop_out: q * hop_out + n * hop_out] += y_frames[:, q * hop_out:(q + 1) * hop_out].reshape(-1)
    y = out * np.float32(2.0 / 3.0)
    if n >= 3:
        head, tail = _ola_edges(m)
        y[: head.size] = out[: head.size] / np.maximum(head, np.float32(1e-3))
        y[-tail.size:] = out[-tail.size:] / np.maximum(tail, np.float32(1e-3))
    # frame 0 (output time `lead` frames) is centred on out[m // 2]
    first = m // 2 - lead * hop_out
    y = y[max(first, 0): first + out_len]
    if first < 0:
        y = np.concatenate([np.zeros(-first, dtype=np.float32), y])[:out_len]
    return np.pad(y, (0, out_len - y.size)) if y.size < out_len else y


def phase_vocoder(x: np.ndarray, rate: float, semitones: float = 0.0) -> np.ndarray:
    """Tempo change by ``rate`` (> 1 faster) and pitch shift by ``semitones`` in ONE phase-vocoder pass;
    round(len(x) / rate) samples."""
    x = np.asarray(x, dtype=np.float32)
    out_len = round(x.size / rate)
    if rate == 1.0 and pitch_frame_length(semitones) == PV_N_FFT:
        return x.copy()
    return synthesise(analyse(x), 0.0, rate, semitones, out_len)


def time_stretch(x: np.ndarray, rate: float) -> np.ndarray:
    """Tempo change without pitch change: round(len(x) / rate) samples."""
    return phase_vocoder(x, rate, 0.0)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad at the end to exactly n samples."""
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def power(x: np.ndarray) -> float:
    """Mean square, summed in float64 without BLAS: a BLAS dot's last bits follow the kernel the machine's
    BLAS picks (``OPENBLAS_CORETYPE``), and the mixes scaled by it would differ between container and host."""
    x = np.asarray(x)
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


@functools.cache
def noise_bank(colour: str) -> np.ndarray:
    """NOISE_BANK_SAMPLES of one noise colour, made once per process (fixed seed): a clip's synthetic noise
    is a stretch of it at a drawn offset (cutting is 20x cheaper than making 1 s of coloured noise)."""
    bank = coloured_noise(NOISE_BANK_SAMPLES, colour, NOISE_BANK_SEED + NOISE_COLOURS.index(colour))
    bank.flags.writeable = False
    return bank


def synth_rir(rt60_s: float, drr_db: float, predelay_ms: float, seed: int, sample_rate: int) -> np.ndarray:
    """A plausible room impulse response: unit direct path at t=0, then after the pre-delay an
    exponentially decaying Gaussian noise tail (60 dB down at rt60_s) whose energy is set by drr_db."""
    rng = np.random.default_rng(seed)
    n_tail = int(rt60_s * sample_rate)
    pre = int(predelay_ms * sample_rate / 1000)
    decay = np.float32(-6.907755 / (rt60_s * sample_rate))  # ln(1000): 60 dB amplitude decay over rt60_s
    tail = rng.standard_normal(n_tail, dtype=np.float32) * np.exp(np.arange(n_tail, dtype=np.float32) * decay)
    tail *= np.float32(np.sqrt(10.0 ** (-drr_db / 10.0) / max(power(tail) * tail.size, 1e-12)))
    h = np.zeros(pre + n_tail, dtype=np.float32)
    h[0] = 1.0
    h[pre:] += tail
    return h


def synthetic_room(k: int) -> Params:
    """Parameters of synthetic room k (0 <= k < SYNTH_RIR_ROOMS), fixed for all runs and seeds."""
    rng = np.random.default_rng([SYNTH_RIR_BANK_SEED, k])
    return {"room": k, "rt60_s": _u(rng, *RT60_RANGE_S, 3), "drr_db": _u(rng, *DRR_RANGE_DB, 2),
            "predelay_ms": _u(rng, *PREDELAY_RANGE_MS, 2), "rir_seed": int(rng.integers(2**31))}


def synth_rir_length(params: Params, sample_rate: int) -> int:
    return int(params["predelay_ms"] * sample_rate / 1000) + int(params["rt60_s"] * sample_rate)


@functools.lru_cache(maxsize=2 * 256)
def _synth_rir_spectrum(rt60_s: float, drr_db: float, predelay_ms: float, seed: int, sample_rate: int,
                        nfft: int) -> np.ndarray:
    return np.fft.rfft(synth_rir(rt60_s, drr_db, predelay_ms, seed, sample_rate).astype(np.float64), nfft)


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Causal FFT convolution truncated to len(x)."""
    nfft = _fast_length(x.size + h.size - 1)
    # float64 input: numpy's pocketfft is several times slower on float32 here
    y = np.fft.irfft(np.fft.rfft(x.astype(np.float64), nfft) * np.fft.rfft(h.astype(np.float64), nfft), nfft)
    return y[: x.size].astype(np.float32)


@functools.cache
def _fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (a fast FFT size)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


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
        m = pitch_frame_length(float(rng.uniform(-self.max_semitones, self.max_semitones)))
        while abs(12.0 * np.log2(PV_N_FFT / m)) > self.max_semitones:  # quantisation stepped past the limit
            m += 4 if m < PV_N_FFT else -4
        semitones = round(12.0 * float(np.log2(PV_N_FFT / m)), 4)
        return {"semitones": semitones if fire else 0.0}

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        return pitch_and_tempo(x, float(params["semitones"]), 1.0)


def pitch_and_tempo(x: np.ndarray, semitones: float, rate: float) -> np.ndarray:
    """Pitch shift by ``semitones`` and tempo change by ``rate`` in one phase-vocoder pass."""
    return phase_vocoder(x, rate, semitones)


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
            drawn = {"snr_db": snr_db, "kind": colour, "noise_offset": int(rng.integers(NOISE_BANK_SAMPLES))}
        return drawn if fire else {"snr_db": None}

    def noise_for(self, n: int, params: Params) -> np.ndarray:
        if params["kind"] == "fondo":
            src = self.sources[params["source"]]
            if src.size < params["offset"] + n:  # short FONDO recording: loop it
                src = np.tile(src, -(-(params["offset"] + n) // src.size))
            return src[params["offset"]: params["offset"] + n]
        bank, o = noise_bank(params["kind"]), params["noise_offset"]
        return bank[o: o + n] if o + n <= bank.size else np.take(bank, np.arange(o, o + n), mode="wrap")

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
        k = int(rng.integers(len(self.rirs) if self.rirs else SYNTH_RIR_ROOMS))
        drawn: Params = {"kind": "file", "rir": k} if self.rirs else {"kind": "synthetic", **synthetic_room(k)}
        return drawn if fire else {"kind": None}

    def rir_for(self, params: Params, sample_rate: int) -> np.ndarray:
        if params["kind"] == "file":
            return self.rirs[params["rir"]]
        return synth_rir(params["rt60_s"], params["drr_db"], params["predelay_ms"], params["rir_seed"], sample_rate)

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        if params.get("kind") is None:
            return x
        if params["kind"] == "synthetic":  # one of SYNTH_RIR_ROOMS rooms: its spectrum is cached per process
            nfft = _fast_length(x.size + synth_rir_length(params, sample_rate) - 1)
            spec = _synth_rir_spectrum(params["rt60_s"], params["drr_db"], params["predelay_ms"], params["rir_seed"],
                                       sample_rate, nfft)
            y = np.fft.irfft(np.fft.rfft(x.astype(np.float64), nfft) * spec, nfft)[: x.size].astype(np.float32)
        else:
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


# VTLP boundary: below WARP_BOUNDARY_HZ * min(alpha, 1) / alpha frequencies scale by alpha; above it the
# warp is linear to the fixed Nyquist frequency (Jaitly & Hinton 2013, "Vocal Tract Length Perturbation").
WARP_BOUNDARY_HZ = 4800.0


def warp_frequencies(f_hz: np.ndarray, alpha: float, sample_rate: int) -> np.ndarray:
    """VTLP map from input to output frequency: f * alpha up to the boundary, then linear to Nyquist."""
    nyq = sample_rate / 2.0
    f0 = min(WARP_BOUNDARY_HZ * min(alpha, 1.0) / alpha, nyq)
    slope = (nyq - alpha * f0) / (nyq - f0) if nyq > f0 else 1.0
    return np.where(f_hz <= f0, alpha * f_hz, alpha * f0 + slope * (f_hz - f0))


@functools.lru_cache(maxsize=64)  # alpha is drawn per clip: few repeats, bounded memory
def _warp_plan(alpha: float, sample_rate: int) -> tuple[np.ndarray, ...]:
    """Per alpha: for every output bin, the source bins of its magnitude (i, i + 1, weight a), the nearest
    source bin j, and the frequency ratio that scales j's phase advance."""
    n = PV_N_FFT
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    src = np.interp(f, warp_frequencies(f, alpha, sample_rate), f)  # inverse map (monotonic)
    pos = src / (sample_rate / n)
    i = np.clip(pos.astype(np.int64), 0, f.size - 2)
    a = np.clip(pos - i, 0.0, 1.0)
    j = np.clip(np.rint(pos).astype(np.int64), 0, f.size - 1)
    ratio = np.where(src > 0, f / np.maximum(src, 1e-9), 1.0)
    return i, a.astype(np.float32), j, ratio.astype(np.float32)


def formant_warp(x: np.ndarray, alpha: float, sample_rate: int) -> np.ndarray:
    """Warp the short-time spectrum along frequency by ``alpha`` (VTLP); same length and RMS.

    STFT 512/128 Hann; output bin k takes the magnitude found at the input frequency that maps onto
    it (linear interpolation), with the phase advance of that input frequency scaled by the warp
    (phase-vocoder accumulation): ``synthesise`` at tempo 1 and no pitch change."""
    x = np.asarray(x, dtype=np.float32)
    if alpha == 1.0 or x.size == 0:
        return x.copy()
    y = synthesise(analyse(x), 0.0, 1.0, 0.0, x.size, alpha, sample_rate)
    px, py = power(x), power(y)
    return (y * np.float32(np.sqrt(px / py))).astype(np.float32) if py > 0 else y


@dataclasses.dataclass(frozen=True)
class FormantWarp:
    """Speaker variation by vocal-tract-length perturbation: ``alpha`` uniform in [low, high] with
    probability ``p`` (else 1.0 = unchanged). alpha > 1 raises formants (shorter vocal tract)."""

    p: float
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> Params:
        fire = rng.random() < self.p
        alpha = _u(rng, self.low, self.high)
        return {"alpha": alpha if fire else 1.0}

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        return formant_warp(x, float(params["alpha"]), sample_rate)


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



# ---- the channel ---------------------------------------------------------------------------------------

TELEPHONE_BAND_HZ = (300.0, 3400.0)
LOW_RATES_HZ = (8000, 11025)
HIGH_PASS_HZ = (60.0, 300.0)
EQ_BUMPS = 3          # smooth random colouring: this many bumps in log-frequency ...
EQ_MAX_DB = 6.0       # ... each of up to this many dB either way
CODINGS = ("mulaw", "linear8")


def _edge(f: np.ndarray, at_hz: float, width_hz: float, rising: bool) -> np.ndarray:
    """A raised-cosine step of ``width_hz`` centred on ``at_hz``: 0 -> 1 (rising) or 1 -> 0."""
    u = np.clip((f - (at_hz - width_hz / 2)) / width_hz, 0.0, 1.0)
    step = 0.5 - 0.5 * np.cos(np.pi * u)
    return step if rising else 1.0 - step


def channel_response(n: int, sample_rate: int, params: Params) -> np.ndarray:
    """The magnitude response (rfft bins of an n-sample signal) of the drawn microphone, band and rate."""
    f, inv_f4, logf, band = _channel_axes(n, sample_rate)
    h = np.ones_like(f)
    mic = params.get("mic")
    if mic:
        h *= 1.0 / np.sqrt(1.0 + mic["high_pass_hz"] ** 4 * inv_f4)  # second-order high-pass magnitude
        db = sum(g * np.exp(-0.5 * ((logf - c) / w) ** 2) for c, w, g in mic["bumps"])
        h *= 10.0 ** (db / 20.0)
    if params.get("band"):
        h *= band
    rate = params.get("low_rate_hz")
    if rate:  # a round trip through a lower rate keeps what lies below its Nyquist frequency
        h *= _rate_edge(n, sample_rate, rate)
    return h


@functools.lru_cache(maxsize=8)
def _channel_axes(n: int, sample_rate: int) -> tuple[np.ndarray, ...]:
    """What every clip of n samples shares: bin frequencies, 1 / f^4 and log2 f (floored), the telephone band."""
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    band = _edge(f, TELEPHONE_BAND_HZ[0], 100.0, True) * _edge(f, TELEPHONE_BAND_HZ[1], 300.0, False)
    return f, np.maximum(f, 1.0) ** -4.0, np.log2(np.maximum(f, 20.0)), band


@functools.lru_cache(maxsize=16)
def _rate_edge(n: int, sample_rate: int, rate: int) -> np.ndarray:
    f = _channel_axes(n, sample_rate)[0]
    return _edge(f, 0.45 * rate, 0.05 * rate, False)


def code_8bit(x: np.ndarray, coding: str) -> np.ndarray:
    """Samples through 8-bit coding: G.711 mu-law (compand, 256 levels, expand) or plain 8-bit linear."""
    y = np.clip(x, -1.0, 1.0).astype(np.float64)
    if coding == "mulaw":
        c = np.sign(y) * np.log1p(255.0 * np.abs(y)) / np.log1p(255.0)
        c = np.round(c * 127.0) / 127.0
        return (np.sign(c) * np.expm1(np.abs(c) * np.log1p(255.0)) / 255.0).astype(np.float32)
    return (np.round(y * 127.0) / 127.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Channel:
    """An unknown microphone, line and converter: each part fires with its own probability."""

    p_mic: float = 0.0
    p_band: float = 0.0
    p_low_rate: float = 0.0
    p_gain: float = 0.0
    gain_db: float = 12.0
    p_8bit: float = 0.0

    @property
    def active(self) -> bool:
        return max(self.p_mic, self.p_band, self.p_low_rate, self.p_gain, self.p_8bit) > 0

    def sample(self, rng: np.random.Generator) -> Params:
        # every draw is made whatever fires, so one probability never reshuffles the others
        fire = rng.random(5)
        high_pass = _u(rng, *HIGH_PASS_HZ, 1)
        bumps = [(_u(rng, np.log2(200.0), np.log2(6000.0)), _u(rng, 0.3, 1.2), _u(rng, -EQ_MAX_DB, EQ_MAX_DB, 2))
                 for _ in range(EQ_BUMPS)]
        rate = LOW_RATES_HZ[int(rng.integers(len(LOW_RATES_HZ)))]
        gain = _u(rng, -self.gain_db, self.gain_db, 2)
        coding = CODINGS[int(rng.integers(len(CODINGS)))]
        return {
            "mic": {"high_pass_hz": high_pass, "bumps": bumps} if fire[0] < self.p_mic else None,
            "band": bool(fire[1] < self.p_band),
            "low_rate_hz": rate if fire[2] < self.p_low_rate else None,
            "gain_db": gain if fire[3] < self.p_gain else 0.0,
            "coding": coding if fire[4] < self.p_8bit else None,
        }

    def apply(self, x: np.ndarray, sample_rate: int, params: Params) -> np.ndarray:
        y = np.asarray(x, dtype=np.float32)
        if params.get("mic") or params.get("band") or params.get("low_rate_hz"):
            h = channel_response(y.size, sample_rate, params)
            y = np.fft.irfft(np.fft.rfft(y.astype(np.float64)) * h, y.size).astype(np.float32)
        if params.get("gain_db"):
            y = y * np.float32(10.0 ** (params["gain_db"] / 20.0))
        if params.get("coding"):
            y = code_8bit(y, params["coding"])
        return y.astype(np.float32)
