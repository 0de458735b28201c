"""How much of a recording is talk: syllable-rate modulation of the speech band, a simple and explainable test.

Speech switches on and off a few times a second (syllables), so the energy in 300-3400 Hz, in dB, swings
around its own 300 ms moving average by many dB; fans, trucks, hum and radio static are steady and swing
little. A 1 s window whose swing (standard deviation) exceeds ``SWING_DB`` counts as talk. Measured on the
demo seeds' and seeds-asrc's backgrounds and on espeak-ng talk (tests/dataset/test_voices.py): talk 8.7-11.5 dB,
noise 0.4-5.2 dB (radio static the highest).

    from pipeline.audio.speechiness import talk_seconds
    seconds = talk_seconds(audio)   # float32 mono at 16 kHz
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
FRAME = 400           # 25 ms
HOP = 160             # 10 ms
BAND_HZ = (300.0, 3400.0)
AVERAGE_FRAMES = 30   # the moving average the swing is measured around (300 ms)
WINDOW_FRAMES = 100   # 1 s windows ...
STEP_FRAMES = 50      # ... every 0.5 s
SWING_DB = 7.0


def band_envelope_db(audio: np.ndarray) -> np.ndarray:
    """Speech-band energy per 10 ms frame, dB."""
    x = np.pad(np.asarray(audio, dtype=np.float32), (0, FRAME))
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP]
    spec = np.abs(np.fft.rfft(frames * np.hanning(FRAME).astype(np.float32), 512)) ** 2
    f = np.fft.rfftfreq(512, 1 / SAMPLE_RATE)
    band = spec[:, (f >= BAND_HZ[0]) & (f <= BAND_HZ[1])].sum(axis=1)
    return 10.0 * np.log10(band + 1e-12)


def window_swings_db(audio: np.ndarray) -> np.ndarray:
    """The swing of the speech-band envelope around its moving average, per 1 s window (every 0.5 s)."""
    e = band_envelope_db(audio)
    detrended = e - np.convolve(e, np.ones(AVERAGE_FRAMES) / AVERAGE_FRAMES, mode="same")
    starts = range(0, max(1, len(detrended) - WINDOW_FRAMES + 1), STEP_FRAMES)
    return np.array([detrended[s: s + WINDOW_FRAMES].std() for s in starts])


def talk_seconds(audio: np.ndarray) -> float:
    """Seconds of ``audio`` that sound like talk (the share of its talk windows times its length)."""
    swings = window_swings_db(audio)
    return float(np.mean(swings > SWING_DB)) * len(audio) / SAMPLE_RATE if swings.size else 0.0
