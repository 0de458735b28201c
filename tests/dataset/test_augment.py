"""pipeline.audio.augment: each transform does what it says, and sample() -> apply() is deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.audio import augment as A
from tests.conftest import tone_word

SR = 16000


def tone(hz: float, n: int = 24000, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / SR)).astype(np.float32)


def dominant_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    k = int(np.argmax(spec))
    # parabolic interpolation of the peak for sub-bin accuracy
    a, b, c = np.log(spec[k - 1: k + 2] + 1e-12)
    return float((k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / x.size)


def energy_centroid_s(x: np.ndarray) -> float:
    e = x.astype(np.float64) ** 2
    return float(np.sum(np.arange(x.size) * e) / np.sum(e) / SR)


def test_shift_moves_the_energy_by_shift_ms() -> None:
    x = tone_word(dur_s=1.0, word_at_s=0.3, word_s=0.3)
    shift = A.Shift(p=1.0, max_shift_ms=100)
    for ms in (80.0, -60.0):
        y = shift.apply(x, SR, {"shift_ms": ms})
        assert y.size == x.size
        assert energy_centroid_s(y) - energy_centroid_s(x) == pytest.approx(ms / 1000, abs=0.002)
    assert shift.apply(x, SR, {"shift_ms": 0.0}) is x


def test_shift_sample_respects_p_and_range() -> None:
    draws = [A.Shift(p=0.5, max_shift_ms=100).sample(np.random.default_rng([1, i]))["shift_ms"] for i in range(400)]
    nonzero = [d for d in draws if d != 0.0]
    assert all(abs(d) <= 100 for d in draws)
    assert 0.35 < len(nonzero) / len(draws) < 0.65
    assert min(nonzero) < -50 and max(nonzero) > 50
    assert all(A.Shift(p=0.0, max_shift_ms=100).sample(np.random.default_rng(i)) == {"shift_ms": 0.0} for i in range(20))


@pytest.mark.parametrize("rate", [0.9, 1.1, 1.3])
def test_stretch_changes_tempo_not_pitch(rate: float) -> None:
    x = tone(440)
    y = A.Stretch(p=1.0, low=0.9, high=1.1).apply(x, SR, {"rate": rate})
    assert y.size == round(x.size / rate)
    assert dominant_hz(y[2000:-2000]) == pytest.approx(440, rel=0.005)
    # a burst gets shorter/longer by the rate: its energy centroid moves proportionally
    w = tone_word(dur_s=1.5, word_at_s=0.8, word_s=0.4)
    assert energy_centroid_s(A.time_stretch(w, rate)) == pytest.approx(energy_centroid_s(w) / rate, abs=0.01)


def test_stretch_rate_one_is_identity_and_sample_in_range() -> None:
    x = tone(300)
    np.testing.assert_array_equal(A.time_stretch(x, 1.0), x)
    st = A.Stretch(p=1.0, low=0.9, high=1.1)
    rates = [st.sample(np.random.default_rng(i))["rate"] for i in range(200)]
    assert all(0.9 <= r <= 1.1 for r in rates) and max(rates) - min(rates) > 0.15


@pytest.mark.parametrize("semitones", [1.0, -1.0, 0.35, 3.0])
def test_pitch_shifts_frequency_keeps_length(semitones: float) -> None:
    x = tone(440)
    y = A.Pitch(p=1.0, max_semitones=3.0).apply(x, SR, {"semitones": semitones})
    assert y.size == x.size
    assert dominant_hz(y[2000:-2000]) == pytest.approx(440 * 2 ** (semitones / 12), rel=0.004)


def test_pitch_and_tempo_together() -> None:
    y = A.pitch_and_tempo(tone(440), 1.0, 1.1)
    assert y.size == round(24000 / 1.1)
    assert dominant_hz(y[2000:-2000]) == pytest.approx(440 * 2 ** (1 / 12), rel=0.004)


def test_pitch_sample_is_quantised_and_bounded() -> None:
    pitch = A.Pitch(p=1.0, max_semitones=1.0)
    steps = [pitch.sample(np.random.default_rng(i))["semitones"] for i in range(300)]
    assert all(abs(s) <= 1.0 for s in steps)
    # quantised to a synthesis frame length m (a multiple of 4): the ratio 512 / m is what is applied
    assert all(abs(A.PV_N_FFT / 2 ** (s / 12) - A.pitch_frame_length(s)) < 5e-3 for s in steps)
    assert all(A.pitch_frame_length(s) % 4 == 0 for s in steps)
    assert all(A.realised_semitones(s) == s for s in steps)
    assert len(set(steps)) >= 12 and min(steps) < -0.8 and max(steps) > 0.8


def test_phase_vocoder_keeps_level_and_timing() -> None:
    x = tone(700, n=24000)
    for rate, semis in ((1.0, 0.7), (1.1, -0.9), (0.9, 0.0)):
        y = A.phase_vocoder(x, rate, semis)
        assert y.size == round(x.size / rate)
        rms = float(np.sqrt(np.mean(y[2000:-2000] ** 2)))
        # a plain phase vocoder loses up to ~1 dB on a steady tone (librosa's does the same)
        assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.12)
    # the word keeps its place under a pitch shift (within a phase-vocoder hop: transients smear a little)
    w = tone_word(dur_s=1.5, word_at_s=0.5, word_s=0.4)
    assert energy_centroid_s(A.phase_vocoder(w, 1.0, 1.0)) == pytest.approx(energy_centroid_s(w), abs=0.015)


@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0, 0.0])
def test_noise_from_fondo_mixes_at_the_drawn_snr(snr: float) -> None:
    rng = np.random.default_rng(3)
    fondo = ((0.05 * rng.standard_normal(SR * 3)).astype(np.float32),
             (0.2 * np.sin(2 * np.pi * 50 * np.arange(SR * 2) / SR)).astype(np.float32))
    noise = A.Noise(p=1.0, snr_list_db=(snr,), clip_samples=SR, sources=fondo)
    x = tone_word(dur_s=1.0, word_at_s=0.3, word_s=0.4)
    for i in range(5):
        params = noise.sample(np.random.default_rng(i))
        assert params["kind"] == "fondo" and params["snr_db"] == snr
        assert 0 <= params["offset"] <= fondo[params["source"]].size - SR
        y = noise.apply(x, SR, params)
        n = y - x
        assert A.snr_db(x, n) == pytest.approx(snr, abs=0.05)
        # the noise is really that FONDO excerpt, scaled
        src = fondo[params["source"]][params["offset"]: params["offset"] + SR]
        assert abs(np.corrcoef(n, src)[0, 1]) > 0.999


def test_synthetic_noise_colours_and_snr() -> None:
    noise = A.Noise(p=1.0, snr_list_db=(10.0,), clip_samples=SR)
    x = tone_word(dur_s=1.0, word_at_s=0.3, word_s=0.4)
    kinds = set()
    for i in range(30):
        params = noise.sample(np.random.default_rng(i))
        kinds.add(params["kind"])
        y = noise.apply(x, SR, params)
        assert A.snr_db(x, y - x) == pytest.approx(10.0, abs=0.05)
    assert kinds == set(A.NOISE_COLOURS)
    # colour shows in the spectrum: brown has far more low-frequency power than white
    lo = {}
    for c in ("white", "pink", "brown"):
        s = np.abs(np.fft.rfft(A.coloured_noise(SR, c, 1))) ** 2
        lo[c] = s[:500].sum() / s.sum()  # power below 500 Hz
    assert lo["white"] < lo["pink"] < lo["brown"]
    assert lo["white"] == pytest.approx(500 / 8001, rel=0.2)


def test_noise_not_drawn_leaves_signal_unchanged() -> None:
    noise = A.Noise(p=0.0, snr_list_db=(0.0,), clip_samples=SR)
    params = noise.sample(np.random.default_rng(0))
    assert params == {"snr_db": None}
    x = tone(200, SR)
    assert noise.apply(x, SR, params) is x


def schroeder_rt60_s(h: np.ndarray) -> float:
    """RT60 from the slope of the backward-integrated energy decay between -5 and -25 dB (T20 x 3)."""
    edc = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    i5, i25 = np.argmax(edc_db <= -5), np.argmax(edc_db <= -25)
    return 3.0 * (i25 - i5) / SR


def test_synthetic_rir_is_plausible_and_deterministic() -> None:
    for rt60, drr in ((0.3, 3.0), (0.7, 8.0)):
        h = A.synth_rir(rt60, drr, 5.0, seed=11, sample_rate=SR)
        assert h[0] == 1.0 and np.all(h[1: int(0.005 * SR)] == 0)  # direct path, then the pre-delay
        tail = h[int(0.005 * SR):]
        assert 10 * np.log10(1.0 / np.sum(tail.astype(np.float64) ** 2)) == pytest.approx(drr, abs=0.01)
        assert schroeder_rt60_s(tail) == pytest.approx(rt60, rel=0.2)
        np.testing.assert_array_equal(h, A.synth_rir(rt60, drr, 5.0, seed=11, sample_rate=SR))
    assert not np.array_equal(A.synth_rir(0.3, 3.0, 5.0, 1, SR), A.synth_rir(0.3, 3.0, 5.0, 2, SR))


def test_reverb_keeps_level_adds_a_tail_and_uses_given_rirs() -> None:
    x = tone(300, SR)
    x[SR // 2:] = 0.0  # sound for 0.5 s, then silence
    rev = A.Reverb(p=1.0)
    drawn = rev.sample(np.random.default_rng(4))
    assert drawn["kind"] == "synthetic"
    assert A.RT60_RANGE_S[0] <= drawn["rt60_s"] <= A.RT60_RANGE_S[1]
    assert A.DRR_RANGE_DB[0] <= drawn["drr_db"] <= A.DRR_RANGE_DB[1]
    params = {**drawn, "rt60_s": 0.6, "drr_db": 3.0}
    y = rev.apply(x, SR, params)
    assert y.size == x.size
    assert A.power(y) == pytest.approx(A.power(x), rel=1e-4)
    after = slice(int(0.55 * SR), int(0.65 * SR))  # 50-150 ms after the sound stops: only the tail
    assert A.power(y[after]) > 1e-3 * A.power(x[: SR // 2])
    late = slice(int(1.0 * SR) - 800, SR)  # the tail decays: 60 dB per rt60
    assert A.power(y[late]) < A.power(y[after])
    h = np.zeros(800, dtype=np.float32)
    h[0], h[400] = 1.0, 0.5
    given = A.Reverb(p=1.0, rirs=(h,))
    gp = given.sample(np.random.default_rng(0))
    assert gp == {"kind": "file", "rir": 0}
    expected = x.copy()
    expected[400:] += 0.5 * x[:-400]
    expected *= np.sqrt(A.power(x) / A.power(expected))
    np.testing.assert_allclose(given.apply(x, SR, gp), expected, atol=1e-5)
    assert A.Reverb(p=0.0).apply(x, SR, A.Reverb(p=0.0).sample(np.random.default_rng(0))) is x


def test_prepare_rir_moves_the_direct_path_to_zero() -> None:
    h = np.zeros(1000, dtype=np.float32)
    h[100], h[300] = -0.8, 0.2
    out = A.prepare_rir(h, 500)
    assert out[0] == pytest.approx(-1.0) and out[200] == pytest.approx(0.25) and out.size == 500


def test_gain_and_clipping_protection() -> None:
    x = tone(100, SR, amp=0.5)
    y = A.Gain(-6, 6).apply(x, SR, {"gain_db": 6.0})
    assert float(np.max(np.abs(y))) == pytest.approx(0.5 * 10 ** (6 / 20), rel=1e-5)
    z = A.protect_clipping(y)
    assert float(np.max(np.abs(z))) == pytest.approx(0.99, rel=1e-6)
    assert A.protect_clipping(x) is x


def test_sampled_params_are_json_and_deterministic() -> None:
    transforms = [A.Shift(0.8, 100), A.Stretch(0.5, 0.9, 1.1), A.Pitch(0.5, 1.0),
                  A.Noise(0.9, (20.0, 10.0), SR, (np.zeros(SR * 2, np.float32) + 0.1,)), A.Reverb(0.3),
                  A.Gain(-12, 3)]
    for t in transforms:
        a = [t.sample(np.random.default_rng([9, 1, i])) for i in range(20)]
        b = [t.sample(np.random.default_rng([9, 1, i])) for i in range(20)]
        assert a == b
        assert json.loads(json.dumps(a)) == a
        c = [t.sample(np.random.default_rng([10, 1, i])) for i in range(20)]
        assert a != c


def test_synthetic_rooms_are_fixed_and_the_cached_path_equals_plain_convolution() -> None:
    rooms = [A.synthetic_room(k) for k in range(A.SYNTH_RIR_ROOMS)]
    assert rooms == [A.synthetic_room(k) for k in range(A.SYNTH_RIR_ROOMS)]
    assert all(A.RT60_RANGE_S[0] <= r["rt60_s"] <= A.RT60_RANGE_S[1] for r in rooms)
    assert len({r["rir_seed"] for r in rooms}) == A.SYNTH_RIR_ROOMS
    x = tone_word(dur_s=1.0, word_at_s=0.2, word_s=0.4)
    rev = A.Reverb(p=1.0)
    for k in (0, 17, 255):
        params = {"kind": "synthetic", **rooms[k]}
        h = A.synth_rir(params["rt60_s"], params["drr_db"], params["predelay_ms"], params["rir_seed"], SR)
        direct = A.convolve(x, h)
        direct *= np.sqrt(A.power(x) / A.power(direct))
        np.testing.assert_allclose(rev.apply(x, SR, params), direct, atol=1e-5)
    drawn = {rev.sample(np.random.default_rng(i))["room"] for i in range(400)}
    assert len(drawn) > 150
