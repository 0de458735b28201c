"""The streaming detector as a pure state machine, FA/h arithmetic, calibration and window slicing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.core.detector import (
    Detector,
    DetectorSettings,
    calibrate,
    class_thresholds,
    count_false_accepts,
    fa_per_hour,
)
from pipeline.eval.detect import iter_window_batches, window_starts

CLASSES = ["ACOPLAR", "FONDO", "SALIR"]   # background in the middle on purpose
A, F, S = 0, 1, 2


def seq(*rows: tuple[float, float]) -> np.ndarray:
    """Rows of (p_ACOPLAR, p_SALIR); FONDO gets the rest."""
    return np.array([[a, 1.0 - a - s, s] for a, s in rows])


def settings(**kw: object) -> DetectorSettings:
    base: dict[str, object] = {"hop_s": 0.1, "smooth_windows": 1, "on_threshold": 0.8, "off_threshold": 0.4,
                               "min_consecutive_windows": 1, "refractory_s": 0.0}
    base.update(kw)
    return DetectorSettings(**base)  # type: ignore[arg-type]


def fired(events: list) -> list[tuple[int, str]]:
    return [(e.window_index, e.class_name) for e in events]


def test_single_crossing_fires_once_with_timestamps() -> None:
    det = Detector(settings(), CLASSES, window_s=1.0)
    events = det.run(seq((0.1, 0), (0.9, 0), (0.95, 0), (0.9, 0), (0.1, 0)))
    assert fired(events) == [(1, "ACOPLAR")]
    assert events[0].start_s == pytest.approx(0.1) and events[0].end_s == pytest.approx(1.1)
    assert events[0].score == pytest.approx(0.9)


def test_hysteresis_needs_drop_below_off_before_refiring() -> None:
    det = Detector(settings(), CLASSES)
    # dips to 0.5 (below on, above off): still latched, no second event
    assert fired(det.run(seq((0.9, 0), (0.5, 0), (0.9, 0), (0.5, 0), (0.9, 0)))) == [(0, "ACOPLAR")]
    # dips to 0.3 (below off): re-armed, fires again
    assert fired(det.run(seq((0.9, 0), (0.3, 0), (0.9, 0)))) == [(0, "ACOPLAR"), (2, "ACOPLAR")]


def test_latched_blocks_other_classes_until_release() -> None:
    det = Detector(settings(), CLASSES)
    # ACOPLAR fires, then SALIR rises while ACOPLAR is still above off: blocked until ACOPLAR falls below off
    got = fired(det.run(seq((0.9, 0.0), (0.45, 0.5), (0.1, 0.85))))
    assert got == [(0, "ACOPLAR"), (2, "SALIR")]


def test_minimum_consecutive_windows() -> None:
    det = Detector(settings(min_consecutive_windows=3), CLASSES)
    assert det.run(seq((0.9, 0), (0.9, 0), (0.1, 0), (0.9, 0), (0.9, 0))) == []
    assert fired(det.run(seq((0.9, 0), (0.9, 0), (0.9, 0), (0.9, 0)))) == [(2, "ACOPLAR")]
    # the run must be the same class: alternating classes never accumulate
    assert det.run(seq((0.9, 0), (0, 0.9), (0.9, 0), (0, 0.9))) == []


def test_refractory_period_blocks_events_for_its_duration() -> None:
    # off threshold 0.85 re-arms at once; refractory 0.5 s = 5 windows of 0.1 s
    det = Detector(settings(off_threshold=0.8, refractory_s=0.5), CLASSES)
    probs = seq(*[(0.9, 0) if i % 2 == 0 else (0.1, 0) for i in range(12)])
    assert [i for i, _ in fired(det.run(probs))] == [0, 6]
    det0 = Detector(settings(off_threshold=0.8, refractory_s=0.0), CLASSES)
    assert [i for i, _ in fired(det0.run(probs))] == [0, 2, 4, 6, 8, 10]
    assert settings(refractory_s=0.5).refractory_windows == 5
    assert settings(refractory_s=0.55).refractory_windows == 6


def test_background_class_never_fires() -> None:
    det = Detector(settings(on_threshold=0.3, off_threshold=0.1), CLASSES)
    probs = np.tile([0.0, 1.0, 0.0], (50, 1))
    assert det.run(probs) == []
    # even when background is top-scoring, only keyword classes are candidates
    got = det.run(np.array([[0.35, 0.6, 0.05]] * 3))
    assert fired(got) == [(0, "ACOPLAR")]


def test_moving_average_smooths_a_one_window_spike_away() -> None:
    spike = seq((0, 0), (0, 0), (0.99, 0), (0, 0), (0, 0))
    assert fired(Detector(settings(smooth_windows=1), CLASSES).run(spike)) == [(2, "ACOPLAR")]
    assert Detector(settings(smooth_windows=3), CLASSES).run(spike) == []
    sm = Detector(settings(smooth_windows=3), CLASSES).smooth(spike)
    assert sm[2, A] == pytest.approx(0.33)
    assert sm[0, F] == pytest.approx(1.0)  # the windows before the stream count as background
    np.testing.assert_allclose(sm.sum(axis=1), 1.0)


def test_the_windows_before_a_stream_count_as_background() -> None:
    # a stream that opens on a one-window spike: it weighs 1/3 of the average, as it would in mid-stream
    opening = seq((0.99, 0), (0, 0), (0, 0))
    cfg = settings(smooth_windows=3)
    np.testing.assert_allclose(Detector(cfg, CLASSES).smooth(opening)[0], [0.33, 0.67, 0.0])
    assert Detector(cfg, CLASSES).run(opening) == []
    det = Detector(cfg, CLASSES)
    assert [e for p in opening for e in det.step(p)] == []
    # a word held for the whole smoothing length from the first window fires once the average is full of it
    held = seq((0.9, 0), (0.9, 0), (0.9, 0), (0, 0))
    assert fired(Detector(cfg, CLASSES).run(held)) == [(2, "ACOPLAR")]
    det = Detector(cfg, CLASSES)
    assert fired([e for p in held for e in det.step(p)]) == [(2, "ACOPLAR")]


def test_step_and_run_agree() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([0.3, 0.3, 0.3], size=300)
    cfg = settings(smooth_windows=4, on_threshold=0.6, off_threshold=0.3, min_consecutive_windows=2, refractory_s=0.3)
    det = Detector(cfg, CLASSES)
    stepped = [e for p in probs for e in det.step(p)]
    ran = Detector(cfg, CLASSES).run(probs)
    assert stepped and fired(stepped) == fired(ran)
    assert [e.score for e in stepped] == pytest.approx([e.score for e in ran])


def test_settings_are_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match="off_threshold"):
        DetectorSettings(on_threshold=0.5, off_threshold=0.6)
    with pytest.raises(ValueError, match="smooth_windows"):
        DetectorSettings(smooth_windows=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DetectorSettings().on_threshold = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError, match="background class"):
        Detector(DetectorSettings(background_class="NOISE"), CLASSES)
    assert DetectorSettings.from_mapping(DetectorSettings().as_dict()) == DetectorSettings()


def test_fa_per_hour_arithmetic() -> None:
    assert fa_per_hour(3, 1800.0) == pytest.approx(6.0)
    assert fa_per_hour(0, 600.0) == 0.0
    assert fa_per_hour(1, 3600.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fa_per_hour(1, 0.0)


def synthetic_negatives(n_files: int = 4, n_windows: int = 3000, seed: int = 1) -> list[np.ndarray]:
    """Mostly background, with keyword bursts of several heights (0.6 … 0.98)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_files):
        p = np.tile([0.02, 0.96, 0.02], (n_windows, 1))
        for start in rng.choice(n_windows - 10, size=12, replace=False):
            h = rng.choice([0.6, 0.7, 0.8, 0.9, 0.95, 0.98])
            p[start: start + 5] = [h, 1 - h, 0.0]
        out.append(p)
    return out


def test_calibration_meets_the_target_and_is_the_lowest_such_threshold() -> None:
    cfg = settings(smooth_windows=1, off_threshold=0.3, refractory_s=1.0)
    negs = synthetic_negatives()
    negative_s = 4 * 3000 * 0.1  # 20 min
    grid = [0.5, 0.65, 0.75, 0.85, 0.925, 0.96, 0.99]
    for target in (0.0, 3.0, 30.0):
        cal = calibrate(negs, negative_s, CLASSES, cfg, target, thresholds=grid)
        smoothed = [Detector(cfg, CLASSES).smooth(p) for p in negs]
        fa = count_false_accepts(smoothed, cal.settings, CLASSES)
        assert cal.false_accepts == fa
        assert fa_per_hour(fa, negative_s) <= target
        assert cal.reached
        lower = [t for t in grid if t < cal.settings.on_threshold]
        if lower:  # the next lower threshold would break the target
            worse = dataclasses.replace(cal.settings, on_threshold=lower[-1], off_threshold=min(0.3, lower[-1]))
            assert fa_per_hour(count_false_accepts(smoothed, worse, CLASSES), negative_s) > target
    # bursts reach 0.98 so 0 FA/h needs a threshold above it
    assert calibrate(negs, negative_s, CLASSES, cfg, 0.0, thresholds=grid).settings.on_threshold == 0.99


def test_class_thresholds_replace_the_global_one_per_class() -> None:
    per_class = settings(on_threshold=0.95, class_on_thresholds={"SALIR": 0.7})
    stream = seq((0.9, 0.0), (0.1, 0.0), (0.0, 0.75), (0.0, 0.1))
    assert fired(Detector(per_class, CLASSES).run(stream)) == [(2, "SALIR")]  # ACOPLAR 0.9 < 0.95; SALIR 0.75 >= 0.7
    assert fired(Detector(settings(on_threshold=0.95), CLASSES).run(stream)) == []
    # round trip through the JSON the board runtime reads
    assert DetectorSettings.from_mapping(per_class.as_dict()) == per_class
    with pytest.raises(ValueError, match="not keyword classes"):
        Detector(settings(class_on_thresholds={"FONDO": 0.9}), CLASSES)
    with pytest.raises(ValueError, match=r"class_on_thresholds\['SALIR'\]"):
        settings(class_on_thresholds={"SALIR": 0.2})  # below the off threshold 0.4


def test_class_thresholds_sit_just_above_what_the_talk_reaches() -> None:
    # talk where SALIR near-misses reach 0.97 for two windows in a row and ACOPLAR only 0.6 for one
    talk = [seq((0.1, 0.0), (0.0, 0.97), (0.0, 0.98), (0.0, 0.2), (0.6, 0.0), (0.1, 0.0))]
    base = settings(on_threshold=0.99, min_consecutive_windows=2)
    got = class_thresholds(talk, base, CLASSES, floor=0.5)
    assert got["SALIR"] == pytest.approx(0.975)   # the grid's first value above 0.97 (the 2-window run's minimum)
    assert got["ACOPLAR"] == pytest.approx(0.5)   # never two windows in a row: the floor
    assert class_thresholds(talk, base, CLASSES, floor=0.8)["ACOPLAR"] == pytest.approx(0.8)
    assert class_thresholds(talk, dataclasses.replace(base, on_threshold=0.9), CLASSES, 0.5)["SALIR"] == 0.9  # capped
    tuned = dataclasses.replace(base, class_on_thresholds=got)
    assert count_false_accepts(talk, tuned, CLASSES) == 0
    # one grid step lower, SALIR fires on the talk
    assert count_false_accepts(talk, dataclasses.replace(base, class_on_thresholds={**got, "SALIR": 0.97}),
                               CLASSES) == 1


def test_calibration_reports_an_unreachable_target() -> None:
    negs = [np.tile([1.0, 0.0, 0.0], (100, 1))]  # a keyword at probability 1 everywhere
    cal = calibrate(negs, 10.0, CLASSES, settings(), 0.0, thresholds=[0.5, 0.9])
    assert not cal.reached and cal.false_accepts == 1 and cal.settings.on_threshold == 0.9


@pytest.mark.parametrize("n_samples,expected", [
    (16000, 1), (8000, 1), (0, 1), (16001, 2), (17600, 2), (17601, 3), (32000, 11), (16000 * 60, 591),
])
def test_window_count(n_samples: int, expected: int) -> None:
    starts = window_starts(n_samples, 16000, 1600)
    assert len(starts) == expected
    assert starts[-1] + 16000 >= n_samples  # the end of the audio is always covered
    np.testing.assert_array_equal(np.diff(starts), 1600)


def test_window_batches_slice_the_audio_with_timestamps() -> None:
    audio = np.arange(2.5 * 16000, dtype=np.float32)  # sample value = its index
    batches = list(iter_window_batches(audio, 16000, 1600, batch_windows=4))
    windows = np.concatenate(batches)
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # 1 + ceil(24000/1600) = 16 windows
    for i, w in enumerate(windows):
        start = i * 1600  # window i starts at i * 0.1 s
        valid = min(16000, len(audio) - start)
        np.testing.assert_array_equal(w[:valid], audio[start: start + valid])
        assert not w[valid:].any()  # zero-padded past the end
    short = list(iter_window_batches(np.ones(100, dtype=np.float32), 16000, 1600))
    assert short[0].shape == (1, 16000) and short[0][0, :100].all() and not short[0][0, 100:].any()
