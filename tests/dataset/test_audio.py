"""pipeline.audio.wav: reading/converting WAVs, writing PCM_16, and the word locator."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.audio.locate import locate_word
from pipeline.audio.wav import AudioError, load_audio, read_audio, write_wav
from tests.conftest import tone_word
from tests.conftest import write_wav as write_fixture_wav

torch.set_num_threads(1)
SR = 16000


def dominant_hz(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * sr / x.size)


def test_pcm16_mono_16k_is_read_unchanged_and_not_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = tone_word()
    path = write_fixture_wav(tmp_path / "a.wav", x)
    with caplog.at_level(logging.INFO, logger="pipeline.audio.wav"):
        y, conv = read_audio(path)
    ref, _ = sf.read(str(path), dtype="float32")
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, ref)
    assert conv.steps == ()
    assert "converted" not in caplog.text


def test_stereo_44k1_24bit_is_converted_to_mono_16k_and_logged(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    sr_in = 44100
    t = np.arange(int(1.5 * sr_in)) / sr_in
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 440 * t)
    path = write_fixture_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), sr=sr_in, subtype="PCM_24")
    with caplog.at_level(logging.INFO, logger="pipeline.audio.wav"):
        y, conv = read_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 1.5 * SR) <= 1
    assert abs(dominant_hz(y) - 440) < 2
    # mono = mean of the channels: amplitude 0.3
    assert 0.29 < float(np.max(np.abs(y[1000:-1000]))) < 0.31
    assert conv.sample_rate_in == sr_in and conv.channels_in == 2 and conv.subtype_in == "PCM_24"
    assert str(path) in caplog.text and "44100 Hz -> 16000 Hz" in caplog.text and "2 channels" in caplog.text


def test_float_wav_above_full_scale_is_scaled_not_clipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = 1.5 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR)
    path = write_fixture_wav(tmp_path / "float.wav", x.astype(np.float32), subtype="FLOAT")
    with caplog.at_level(logging.INFO, logger="pipeline.audio.wav"):
        y = load_audio(path)
    assert float(np.max(np.abs(y))) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(y, x / 1.5, atol=1e-6)
    assert "FLOAT -> float32" in caplog.text and "scaled" in caplog.text


def test_48k_resampling_keeps_a_tone(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    path = write_fixture_wav(tmp_path / "48k.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), sr=48000)
    y = load_audio(path)
    assert y.size == SR and abs(dominant_hz(y) - 1000) < 2


def test_the_cached_resampler_gives_torchaudios_functional_output() -> None:
    import torch
    import torchaudio.functional as F

    from pipeline.audio.wav import resample

    x = np.random.default_rng(3).standard_normal(22050).astype(np.float32)
    for rates in ((22050, 16000), (48000, 16000), (16000, 8000), (8000, 16000)):
        want = F.resample(torch.from_numpy(x), *rates).numpy()
        np.testing.assert_array_equal(resample(x, *rates), want)


def test_corrupt_wav_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=r"broken\.wav: unreadable or corrupt audio .*re-export it"):
        load_audio(path)


def test_empty_wav_is_refused(tmp_path: Path) -> None:
    path = write_fixture_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match=r"empty\.wav: the file holds no audio"):
        load_audio(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "nope.wav")


def test_an_unreadable_file_says_permission_not_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "take.wav"
    write_wav(p, tone_word())
    monkeypatch.setattr("pipeline.audio.wav.os.access", lambda path, mode: False)  # root reads anything
    with pytest.raises(AudioError, match=r"take\.wav: no permission to read it; chmod a\+r it") as e:
        read_audio(p)
    assert "export" not in str(e.value)


def test_write_wav_is_pcm16_rounded_and_saturating(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -1.7, 1e-5], dtype=np.float32)
    path = tmp_path / "sub" / "out.wav"
    write_wav(path, x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    ints, _ = sf.read(str(path), dtype="int16")
    assert ints.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32768, 0]
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temporary file left
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "stereo.wav", np.zeros((10, 2), dtype=np.float32))


@pytest.mark.parametrize("word_at_s, word_s", [(0.7, 0.5), (0.1, 0.6), (1.2, 0.75)])
def test_locator_finds_a_word_at_a_known_offset(word_at_s: float, word_s: float) -> None:
    x = tone_word(dur_s=2.0, word_at_s=word_at_s, word_s=word_s)
    span = locate_word(x)
    # The burst has a sin^2 envelope: its first/last ~10 % are far below the peak, hence the tolerance.
    assert word_at_s - 0.05 <= span.start / SR <= word_at_s + 0.1
    assert word_at_s + word_s - 0.1 <= span.end / SR <= min(2.0, word_at_s + word_s + 0.05)
    assert span.n_sounds == 1


def test_locator_keeps_the_louder_word_in_a_short_seed() -> None:
    x = tone_word(dur_s=3.0, word_at_s=0.4, word_s=0.5)
    x += 0.3 * tone_word(dur_s=3.0, word_at_s=2.0, word_s=0.4, seed=5)  # quieter second sound
    span = locate_word(x)
    assert span.n_sounds == 2
    assert 0.3 < span.start / SR < 0.5 and span.end / SR < 1.0


def test_locator_refuses_silence_and_flat_noise() -> None:
    with pytest.raises(AudioError, match="all silent"):
        locate_word(np.zeros(SR * 2, dtype=np.float32), name="quiet.wav")
    with pytest.raises(AudioError, match="all silent"):
        locate_word((1e-4 * np.random.default_rng(0).standard_normal(SR * 2)).astype(np.float32))
    with pytest.raises(AudioError, match="no word stands out"):
        locate_word((0.1 * np.random.default_rng(0).standard_normal(SR * 2)).astype(np.float32))
    with pytest.raises(AudioError, match="empty recording"):
        locate_word(np.zeros(0, dtype=np.float32))


def test_locator_refuses_a_long_seed_with_several_words() -> None:
    x = tone_word(dur_s=12.0, word_at_s=2.0, word_s=0.5)
    x += tone_word(dur_s=12.0, word_at_s=6.0, word_s=0.5, seed=1, f0_hz=180)
    x += tone_word(dur_s=12.0, word_at_s=9.0, word_s=0.5, seed=2, f0_hz=260)
    with pytest.raises(AudioError, match=r"long\.wav: 12\.0 s long with 3 separate words .*split it into one file per word"):
        locate_word(x, name="long.wav")


def test_locator_accepts_a_long_seed_with_one_word() -> None:
    x = tone_word(dur_s=12.0, word_at_s=5.0, word_s=0.5)
    span = locate_word(x)
    assert 4.9 < span.start / SR < 5.1
