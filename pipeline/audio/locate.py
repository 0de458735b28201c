"""Where the spoken word is in a seed recording (frame energy against the recording's own noise floor).

``locate_word`` returns the span of the loudest sound, so a 1 s crop can be placed around it without cutting
it, and refuses silent recordings, recordings where nothing stands out, and long takes with several words.

Example (prints where the word is in a seed)::

    python -c "from pipeline.audio.wav import load_audio; from pipeline.audio.locate import locate_word; \
print(locate_word(load_audio('data/demo-seeds/SALIR/000_salir.wav')))"
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.audio.wav import SAMPLE_RATE, AudioError

# Frame analysis for the word locator: 25 ms windows every 10 ms.
FRAME_MS = 25.0
HOP_MS = 10.0
# A recording whose loudest 25 ms frame is below this RMS level (dBFS) has nothing in it.
SILENCE_DBFS = -60.0
# Active frames closer than this are one word (stop consonants and short pauses inside a word).
MERGE_GAP_MS = 250.0
# Bursts shorter than this are clicks, not words.
MIN_WORD_MS = 60.0
# Collar added on each side of the detected span (soft onsets / decays under the threshold).
COLLAR_MS = 30.0
# A second sound whose energy is at least this fraction of the main word's counts as another word.
OTHER_WORD_ENERGY_FRACTION = 0.2
# Seeds longer than this must hold one word (long takes with several words must be split).
MULTI_WORD_CHECK_S = 10.0
# A take with more than this fraction of its samples at full scale was clipped by the recording chain.
CLIPPED_FRACTION = 0.001
FULL_SCALE = 0.999
# The word may fill this fraction of the clip (a margin at the edges), sped up at most MAX_FIT_RATE to fit.
WORD_FIT_FRACTION = 0.92
MAX_FIT_RATE = 1.75


@dataclasses.dataclass(frozen=True)
class WordSpan:
    """Where the word is in a seed, in samples at the seed's (16 kHz) rate; end is exclusive."""

    start: int
    end: int
    peak_dbfs: float
    floor_dbfs: float
    n_sounds: int  # separate sounds found (the word plus any others that were ignored)

    @property
    def center(self) -> float:
        return 0.5 * (self.start + self.end)

    @property
    def length(self) -> int:
        return self.end - self.start

    def as_dict(self, sample_rate: int = SAMPLE_RATE) -> dict[str, object]:
        return {"start_s": round(self.start / sample_rate, 4), "end_s": round(self.end / sample_rate, 4),
                "length_s": round(self.length / sample_rate, 4), "start": self.start, "end": self.end,
                "peak_dbfs": round(self.peak_dbfs, 1), "floor_dbfs": round(self.floor_dbfs, 1),
                "n_sounds": self.n_sounds}


def frame_energy_db(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int, int]:
    """RMS level per frame in dBFS (vectorised); returns (levels, frame_len, hop)."""
    frame = round(FRAME_MS * sample_rate / 1000)
    hop = round(HOP_MS * sample_rate / 1000)
    x = np.asarray(audio, dtype=np.float64)
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    # Power per frame from a cumulative sum of squares: O(n), no frame matrix.
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, x.size - frame + 1, hop)
    power = (c[starts + frame] - c[starts]) / frame
    return 10.0 * np.log10(np.maximum(power, 1e-12)), frame, hop


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where mask is True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def locate_word(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, name: str = "<audio>") -> WordSpan:
    """Find the spoken word: frames well above the recording's noise floor, merged across short gaps.

    The loudest sound (by energy) is the word; other sounds are counted in ``n_sounds``. A seed longer
    than 10 s with more than one strong sound is refused (split it into one file per word). Raises
    AudioError for empty or silent recordings.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.size == 0:
        raise AudioError(f"{name}: empty recording (0 samples); record the word again")
    level_db, frame, hop = frame_energy_db(x, sample_rate)
    peak = float(level_db.max())
    floor = float(np.percentile(level_db, 10))
    if peak < SILENCE_DBFS:
        raise AudioError(f"{name}: all silent (loudest 25 ms frame {peak:.0f} dBFS < {SILENCE_DBFS:.0f} dBFS); "
                         "record the word again closer to the microphone or check the input gain")
    if peak - floor < 10.0:
        raise AudioError(f"{name}: no word stands out from the background (peak {peak:.0f} dBFS, floor "
                         f"{floor:.0f} dBFS); record the word with a quiet pause before and after it")
    threshold = max(floor + 0.4 * (peak - floor), peak - 40.0)
    active = level_db > threshold
    # Close gaps shorter than MERGE_GAP_MS.
    gap_frames = round(MERGE_GAP_MS / HOP_MS)
    runs = _runs(active)
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] <= gap_frames:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    min_frames = max(1, round(MIN_WORD_MS / HOP_MS))
    sounds = [(a, b) for a, b in merged if b - a >= min_frames] or [tuple(max(merged, key=lambda r: r[1] - r[0]))]
    lin = 10.0 ** (level_db / 10.0)
    energies = [float(lin[a:b].sum()) for a, b in sounds]
    main = int(np.argmax(energies))
    strong = [e for e in energies if e >= OTHER_WORD_ENERGY_FRACTION * energies[main]]
    duration_s = x.size / sample_rate
    if duration_s > MULTI_WORD_CHECK_S and len(strong) > 1:
        where = ", ".join(f"{sounds[i][0] * hop / sample_rate:.1f} s" for i in range(len(sounds))
                          if energies[i] >= OTHER_WORD_ENERGY_FRACTION * energies[main])
        raise AudioError(f"{name}: {duration_s:.1f} s long with {len(strong)} separate words (at {where}); "
                         "split it into one file per word (each 1.4-4 s, the word with a short pause around it)")
    a, b = sounds[main]
    collar = round(COLLAR_MS * sample_rate / 1000)
    start = max(0, a * hop - collar)
    end = min(x.size, (b - 1) * hop + frame + collar)
    return WordSpan(start=start, end=end, peak_dbfs=peak, floor_dbfs=floor, n_sounds=len(sounds))


def check_command_take(audio: np.ndarray, clip_samples: int, sample_rate: int = SAMPLE_RATE,
                       name: str = "<audio>") -> WordSpan:
    """The checks every recording of a command passes (the dataset's seeds, ``invoke record``'s takes):
    not clipped, not silent, a word that stands out, short enough for a clip. AudioError says which and why."""
    x = np.asarray(audio, dtype=np.float32)
    at_full_scale = int(np.count_nonzero(np.abs(x) >= FULL_SCALE))
    if x.size and at_full_scale > CLIPPED_FRACTION * x.size:
        raise AudioError(f"{name}: clipped ({at_full_scale} samples at full scale, {100 * at_full_scale / x.size:.1f}%); "
                         "record it again with the input gain lower or further from the microphone")
    word = locate_word(x, sample_rate, name=name)
    if word.length / (WORD_FIT_FRACTION * clip_samples) > MAX_FIT_RATE:
        raise AudioError(
            f"{name}: the word is {word.length / sample_rate:.2f} s long ({word.start / sample_rate:.2f}-"
            f"{word.end / sample_rate:.2f} s), too long for a {clip_samples / sample_rate:g} s clip even sped up "
            f"x{MAX_FIT_RATE}; record it spoken at a normal pace with silence around it")
    return word
