"""The streaming keyword detector: a pure state machine over per-window class probabilities.

Per window (the model's window of audio, every ``hop_s``): a moving average of the class probabilities over
windows (the windows before the stream began count as background: a stream starts from quiet, so its first
window weighs no more than any later one), hysteresis (an on and an off threshold), a minimum number of
consecutive windows above the on threshold, and a refractory period after each event. The background class
(FONDO) never fires. :func:`calibrate` chooses the on threshold on keyword-free audio for a target of false
accepts per hour.

numpy and the standard library only: the same file runs in the board runtime (``device/runtime``),
so the host's ``pipeline.eval.detect`` and the board fire on exactly the same rules.

    from pipeline.core.detector import Detector, DetectorSettings
    events = Detector(DetectorSettings(), ["SALIR", "FONDO"]).run(probs)   # probs (n_windows, n_classes)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BACKGROUND_CLASS = "FONDO"
# A model is "decided" about an input when its top-1 probability is at least this: INT8-vs-FP32 top-1 agreement is
# judged on decided inputs. A calibrated on-threshold can sit below it (a moving average of 0.64-0.82 for the
# default head), so the detector on the INT8 model is also judged whole, by make eval-int8.
DECIDED_PROB = 0.8
# The threshold grid searched by calibrate() and evaluate's DET sweep: fine near 1 where the
# useful operating points of a softmax classifier live.
DEFAULT_THRESHOLD_GRID: tuple[float, ...] = tuple(
    sorted({round(float(t), 6) for t in np.concatenate([
        np.arange(0.30, 0.90, 0.02), np.arange(0.90, 0.99, 0.005), np.arange(0.99, 0.9995, 0.0005),
        [0.9995, 0.9998, 0.9999],
    ])})
)


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """Detector knobs. Scores are smoothed softmax probabilities in [0, 1]."""

    hop_s: float = 0.1                   # window hop (the window itself is the contract's clip, 1 s)
    smooth_windows: int = 3              # moving-average length over windows (1 = no smoothing)
    on_threshold: float = 0.9            # a keyword's smoothed probability must reach this to fire
    off_threshold: float = 0.5           # ... and drop below this before anything can fire again
    min_consecutive_windows: int = 2     # windows in a row at/above on_threshold (same class) to fire
    refractory_s: float = 1.0            # no event within this time after an event
    background_class: str = BACKGROUND_CLASS
    # per keyword class, an on threshold that replaces on_threshold for that class (calibrated per class)
    class_on_thresholds: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.hop_s > 0:
            problems.append(f"hop_s={self.hop_s} must be > 0")
        if self.smooth_windows < 1:
            problems.append(f"smooth_windows={self.smooth_windows} must be >= 1")
        if not 0.0 < self.on_threshold <= 1.0:
            problems.append(f"on_threshold={self.on_threshold} must be in (0, 1]")
        if not 0.0 <= self.off_threshold <= self.on_threshold:
            problems.append(f"off_threshold={self.off_threshold} must be in [0, on_threshold={self.on_threshold}]")
        if self.min_consecutive_windows < 1:
            problems.append(f"min_consecutive_windows={self.min_consecutive_windows} must be >= 1")
        if self.refractory_s < 0:
            problems.append(f"refractory_s={self.refractory_s} must be >= 0")
        for name, t in dict(self.class_on_thresholds).items():
            if not (isinstance(t, (int, float)) and self.off_threshold <= t <= 1.0 and t > 0.0):
                problems.append(f"class_on_thresholds[{name!r}]={t} must be in [off_threshold={self.off_threshold}, 1]")
        if problems:
            raise ValueError("invalid detector settings: " + "; ".join(problems))

    @property
    def refractory_windows(self) -> int:
        """Windows after an event during which nothing fires (refractory_s rounded up to whole hops)."""
        return math.ceil(self.refractory_s / self.hop_s - 1e-9)

    def on_threshold_for(self, class_name: str) -> float:
        return float(self.class_on_thresholds.get(class_name, self.on_threshold))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DetectorSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown detector settings {unknown}; known: {sorted(names)}")
        return cls(**dict(data))


@dataclasses.dataclass(frozen=True)
class Event:
    class_name: str
    class_index: int
    window_index: int
    start_s: float      # start of the window that fired
    end_s: float        # its end: the moment a streaming detector would report the keyword
    score: float        # smoothed probability of the class when it fired

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Detector:
    """The streaming state machine. Feed one probability vector per window with :meth:`step`.

    Rules, per window ``i`` with smoothed scores ``s`` (moving average of the last ``smooth_windows``
    probability vectors; before the first window, each missing one counts as certain background):

    - the candidate is the keyword class (never the background class) with the highest ``s``;
    - it must stay the candidate with ``s >=`` its on threshold (``class_on_thresholds``, else ``on_threshold``)
      for ``min_consecutive_windows`` windows;
    - after an event the detector is latched until the fired class's ``s`` drops below ``off_threshold``
      (hysteresis) and, independently, nothing fires for ``refractory_s`` (refractory period).
    """

    def __init__(self, settings: DetectorSettings, classes: Sequence[str], window_s: float = 1.0) -> None:
        self.settings = settings
        self.classes = list(classes)
        self.window_s = float(window_s)
        if settings.background_class not in self.classes:
            raise ValueError(
                f"background class {settings.background_class!r} is not among the model classes {self.classes}; "
                "set background_class to the model's background class"
            )
        self.background_index = self.classes.index(settings.background_class)
        self.keyword_indices = [i for i in range(len(self.classes)) if i != self.background_index]
        if not self.keyword_indices:
            raise ValueError(f"classes {self.classes} hold no keyword class besides the background")
        unknown = sorted(set(settings.class_on_thresholds) - {self.classes[i] for i in self.keyword_indices})
        if unknown:
            raise ValueError(f"class_on_thresholds name {unknown}, not keyword classes of the model {self.classes}")
        self._on = [settings.on_threshold_for(c) for c in self.classes]
        self._before = np.zeros(len(self.classes))
        self._before[self.background_index] = 1.0
        self.reset()

    def reset(self) -> None:
        n = self.settings.smooth_windows
        self._buffer: deque[np.ndarray] = deque([self._before] * (n - 1), maxlen=n)
        self._index = 0
        self._run_class: int | None = None
        self._run_length = 0
        self._latched: int | None = None
        self._next_allowed = 0

    def step(self, probs: Sequence[float] | np.ndarray) -> list[Event]:
        """Advance by one window given its class probabilities; return the events it produced (0 or 1)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (len(self.classes),):
            raise ValueError(f"expected {len(self.classes)} probabilities (one per class), got shape {p.shape}")
        self._buffer.append(p)
        smoothed = np.mean(np.stack(self._buffer), axis=0)
        return self._advance(smoothed.tolist())

    def run(self, prob_sequence: np.ndarray | Sequence[Sequence[float]]) -> list[Event]:
        """Run a fresh detector over a whole ``(n_windows, n_classes)`` sequence; same result as ``step``."""
        probs = np.asarray(prob_sequence, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.classes):
            raise ValueError(f"expected probabilities of shape (n_windows, {len(self.classes)}), got {probs.shape}")
        return self.run_smoothed(self.smooth(probs))

    def smooth(self, prob_sequence: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """The scores :meth:`step` would see for each window of a fresh stream: the moving average, with the
        windows before the stream counted as background."""
        return moving_average(np.asarray(prob_sequence, dtype=np.float64), self.settings.smooth_windows, self._before)

    def run_smoothed(self, smoothed: np.ndarray) -> list[Event]:
        """Run a fresh detector over already smoothed scores (lets a threshold sweep smooth only once)."""
        self.reset()
        events: list[Event] = []
        for row in np.asarray(smoothed, dtype=np.float64).tolist():
            events.extend(self._advance(row))
        return events

    def _advance(self, s: list[float]) -> list[Event]:
        cfg = self.settings
        i = self._index
        self._index += 1
        if self._latched is not None and s[self._latched] < cfg.off_threshold:
            self._latched = None
        best = max(self.keyword_indices, key=s.__getitem__)
        if s[best] >= self._on[best]:
            if best == self._run_class:
                self._run_length += 1
            else:
                self._run_class, self._run_length = best, 1
        else:
            self._run_class, self._run_length = None, 0
        if self._latched is None and self._run_length >= cfg.min_consecutive_windows and i >= self._next_allowed:
            self._latched = best
            self._next_allowed = i + max(1, cfg.refractory_windows)
            start_s = i * cfg.hop_s
            return [Event(self.classes[best], best, i, round(start_s, 6), round(start_s + self.window_s, 6), s[best])]
        return []


def moving_average(probs: np.ndarray, n_windows: int, before: np.ndarray) -> np.ndarray:
    """Causal moving average over the last ``n_windows`` rows, ``before`` standing for each row before the first."""
    x = np.asarray(probs, dtype=np.float64)
    if n_windows <= 1 or len(x) == 0:
        return x.copy()
    padded = np.concatenate([np.tile(np.asarray(before, dtype=np.float64), (n_windows - 1, 1)), x])
    c = np.cumsum(np.concatenate([np.zeros((1, x.shape[1])), padded]), axis=0)
    return (c[n_windows:] - c[:-n_windows]) / n_windows


# ---- FA/h arithmetic and calibration ---------------------------------------------------------------

def fa_per_hour(false_accepts: int, negative_s: float) -> float:
    """False accepts per hour of keyword-free audio."""
    if negative_s <= 0:
        raise ValueError(f"negative audio duration must be > 0 s to compute FA/h, got {negative_s}")
    return false_accepts * 3600.0 / negative_s


def smooth_streams(prob_sequences: Iterable[np.ndarray], settings: DetectorSettings,
                   classes: Sequence[str]) -> list[np.ndarray]:
    """Each sequence smoothed as a fresh stream (:meth:`Detector.smooth`), for sweeps that smooth only once."""
    det = Detector(settings, classes)
    return [det.smooth(p) for p in prob_sequences]


def count_false_accepts(smoothed_sequences: Iterable[np.ndarray], settings: DetectorSettings,
                        classes: Sequence[str]) -> int:
    """Events the detector fires on keyword-free audio (every event there is a false accept)."""
    det = Detector(settings, classes)
    # A window starts a run only at or above its class's on threshold: a sequence that never gets there
    # cannot fire, and most keyword-free files never reach the high thresholds a calibration sweeps.
    keyword = np.asarray(det.keyword_indices)
    lowest = min(settings.on_threshold_for(det.classes[k]) for k in det.keyword_indices)
    return sum(len(det.run_smoothed(s)) for s in smoothed_sequences
               if len(s) and float(np.max(np.asarray(s)[:, keyword])) >= lowest)


def with_on_threshold(settings: DetectorSettings, on_threshold: float) -> DetectorSettings:
    """The settings with another on threshold; the off threshold is lowered to it if it was higher."""
    return dataclasses.replace(settings, on_threshold=on_threshold,
                               off_threshold=min(settings.off_threshold, on_threshold))


@dataclasses.dataclass(frozen=True)
class Calibration:
    settings: DetectorSettings
    false_accepts: int
    negative_s: float
    fa_per_hour: float
    target_fa_per_hour: float
    reached: bool        # False: even the highest threshold searched exceeds the target


def calibrate(prob_sequences: Sequence[np.ndarray], negative_s: float, classes: Sequence[str],
              base: DetectorSettings, target_fa_per_hour: float,
              thresholds: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> Calibration:
    """Lowest on threshold such that it and every higher one searched give FA/h <= target on the negatives.

    ``prob_sequences``: per negative file, the model's probabilities per window ``(n_windows, n_classes)``;
    ``negative_s``: their total duration in seconds. Requiring every higher threshold to meet the target
    too keeps the choice safe where refractory/hysteresis make FA counts not quite monotone.
    """
    if target_fa_per_hour < 0:
        raise ValueError(f"target FA/h must be >= 0, got {target_fa_per_hour}")
    grid = sorted({float(t) for t in thresholds})
    smoothed = smooth_streams(prob_sequences, base, classes)
    # from the highest threshold down, stopping at the first that breaks the target: the thresholds
    # below it cannot be chosen, so their false accepts are never counted
    counts: dict[int, int] = {}
    chosen = None
    for k in range(len(grid) - 1, -1, -1):
        counts[k] = count_false_accepts(smoothed, with_on_threshold(base, grid[k]), classes)
        if fa_per_hour(counts[k], negative_s) > target_fa_per_hour:
            break
        chosen = k
    rates = {k: fa_per_hour(c, negative_s) for k, c in counts.items()}
    reached = chosen is not None
    if chosen is None:
        chosen = len(grid) - 1
        log.warning("no on threshold up to %.4f reaches %.3g FA/h (%.3g FA/h there); using it",
                    grid[chosen], target_fa_per_hour, rates[chosen])
    settings = with_on_threshold(base, grid[chosen])
    log.info("calibrated on_threshold=%.4f: %d false accepts in %.1f s = %.3g FA/h (target %.3g)",
             grid[chosen], counts[chosen], negative_s, rates[chosen], target_fa_per_hour)
    return Calibration(settings, counts[chosen], negative_s, rates[chosen], target_fa_per_hour, reached)


def class_thresholds(smoothed_sequences: Sequence[np.ndarray], settings: DetectorSettings, classes: Sequence[str],
                     floor: float, thresholds: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> dict[str, float]:
    """Per keyword class, the lowest threshold of the grid (at least ``floor``, at most ``settings.on_threshold``)
    at which that class never fires on these keyword-free sequences.

    A class fires when it is the candidate (the highest keyword score) with a score at or above its threshold for
    ``min_consecutive_windows`` windows in a row; the highest threshold at which that happens anywhere is the
    largest, over such runs, of the run's lowest score. A class whose near misses score low in the talk needs no
    threshold as high as the class whose near misses score 0.99."""
    names = list(classes)
    if settings.background_class not in names:
        raise ValueError(f"background class {settings.background_class!r} is not among {names}")
    keyword = [i for i, c in enumerate(names) if c != settings.background_class]
    mc = settings.min_consecutive_windows
    reach = np.zeros(len(names))
    for s in smoothed_sequences:
        s = np.asarray(s, dtype=np.float64)
        if len(s) < mc:
            continue
        candidate = np.asarray(keyword)[np.argmax(s[:, keyword], axis=1)]
        for k in keyword:
            score = np.where(candidate == k, s[:, k], 0.0)
            runs = np.lib.stride_tricks.sliding_window_view(score, mc).min(axis=1)
            reach[k] = max(reach[k], float(runs.max()))
    grid = sorted({float(t) for t in thresholds} | {1.0})
    out = {}
    for k in keyword:
        above = next(t for t in grid if t > reach[k] or t == 1.0)
        out[names[k]] = min(settings.on_threshold, max(floor, above))
    return out
