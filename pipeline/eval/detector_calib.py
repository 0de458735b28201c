"""Detector calibration: the default detector settings of a model, chosen on a development set.

The detector (``pipeline.core.detector``) has a structure (moving average length, consecutive windows,
hysteresis, refractory period) and an on threshold. A fixed threshold means a different false-accept
rate for every model, so each model gets its own: for every candidate structure in the params file
(``smooth_windows`` x ``min_consecutive_windows``), the lowest on threshold that keeps false accepts on
the development set's keyword-free audio at or below ``target_fa_per_hour`` (``pipeline.core.detector.calibrate``);
among the candidates that reach the target, the one that misses the fewest development keyword clips
(ties: the shorter smoothing, then fewer consecutive windows, i.e. the lower latency). Each development
command is streamed with ``context_s`` of quiet before and after it, as in a real stream (a clip that
starts with the word would meet the quiet the detector assumes before a stream, not its own context).

The development set is ``pipeline.eval.holdout_tts --split dev``: speakers that are neither training nor
evaluation speakers, speaking training texts. So the evaluation set stays unseen until
``pipeline.eval.evaluate`` scores it with these settings.

Inputs -> outputs: ``--onnx`` model + ``--dev`` folder (one folder per class; ``FONDO`` = keyword-free
audio) -> ``<out>/settings.json`` (``{"settings": …, "calibration": …}``, read by ``pipeline.eval.detect
--settings`` and ``pipeline.eval.evaluate --settings``) and ``<out>/report.md``.

Example::

    python -m pipeline.eval.detector_calib \\
        --onnx build/model/kws.onnx --dev build/holdout-dev --out build/detector
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.cli import StageError, die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.detector import (
    BACKGROUND_CLASS,
    Calibration,
    DetectorSettings,
    calibrate,
    class_thresholds,
    count_false_accepts,
    fa_per_hour,
    smooth_streams,
)
from pipeline.core.io import atomic_dir, atomic_write_json, atomic_write_text, sha256_file
from pipeline.eval.detect import in_context, negative_probs, stream_probs

log = logging.getLogger(__name__)

STAGE = "detector"


@dataclasses.dataclass(frozen=True)
class Candidate:
    settings: DetectorSettings
    reached: bool
    false_accepts: int
    fa_per_hour: float
    miss_rate: float | None   # development keyword clips the detector did not fire on (None: no keyword clips)

    def as_dict(self) -> dict[str, Any]:
        return {"smooth_windows": self.settings.smooth_windows,
                "min_consecutive_windows": self.settings.min_consecutive_windows,
                "on_threshold": self.settings.on_threshold,
                "class_on_thresholds": dict(self.settings.class_on_thresholds), "reached": self.reached,
                "false_accepts": self.false_accepts, "fa_per_hour": self.fa_per_hour, "miss_rate": self.miss_rate}


def miss_rate(pos_probs: Sequence[np.ndarray], pos_labels: Sequence[int], settings: DetectorSettings,
              classes: Sequence[str]) -> float | None:
    """Fraction of keyword clips on which the detector never fires the clip's class."""
    from pipeline.eval.evaluate import detector_hits

    if not pos_probs:
        return None
    hits = detector_hits(smooth_streams(pos_probs, settings, classes), pos_labels, settings, classes)
    return 1.0 - sum(hits) / len(hits)


def per_class(neg_probs: Sequence[np.ndarray], negative_s: float, classes: Sequence[str], cal: Calibration,
              floor: float) -> Calibration:
    """The calibration with each command's own on threshold (``class_thresholds``) where that keeps the false
    accepts on the negatives at the global threshold's count; else the calibration unchanged."""
    smoothed = smooth_streams(neg_probs, cal.settings, classes)
    tuned = dataclasses.replace(cal.settings, class_on_thresholds=class_thresholds(smoothed, cal.settings, classes,
                                                                                     floor))
    fa = count_false_accepts(smoothed, tuned, classes)
    if fa > cal.false_accepts:
        log.info("per-class thresholds add false accepts (%d > %d): kept the global one", fa, cal.false_accepts)
        return cal
    return dataclasses.replace(cal, settings=tuned, false_accepts=fa, fa_per_hour=fa_per_hour(fa, negative_s))


def choose(neg_probs: Sequence[np.ndarray], negative_s: float, pos_probs: Sequence[np.ndarray],
           pos_labels: Sequence[int], classes: Sequence[str], base: DetectorSettings,
           smooth_windows: Sequence[int], consecutive: Sequence[int],
           target_fa_per_hour: float, class_floor: float | None = None) -> tuple[Candidate, list[Candidate]]:
    """Calibrate every candidate structure to the target and pick the best (see the module doc);
    ``class_floor``: also give each command its own threshold, not below this (None: one threshold)."""
    candidates = []
    for sw, mc in itertools.product(sorted(set(smooth_windows)), sorted(set(consecutive))):
        structure = dataclasses.replace(base, smooth_windows=sw, min_consecutive_windows=mc)
        cal = calibrate(neg_probs, negative_s, classes, structure, target_fa_per_hour)
        if class_floor is not None and cal.reached:
            cal = per_class(neg_probs, negative_s, classes, cal, class_floor)
        c = Candidate(cal.settings, cal.reached, cal.false_accepts, cal.fa_per_hour,
                      miss_rate(pos_probs, pos_labels, cal.settings, classes))
        log.info("smooth %d, consecutive %d: on %.4f, %.3g FA/h%s, dev miss %s", sw, mc, c.settings.on_threshold,
                 c.fa_per_hour, "" if c.reached else " (target NOT reached)",
                 "n/a" if c.miss_rate is None else f"{c.miss_rate:.3f}")
        candidates.append(c)

    def rank(c: Candidate) -> tuple[Any, ...]:
        miss = 1.0 if c.miss_rate is None else c.miss_rate
        if c.reached:
            return (0, miss, c.settings.smooth_windows, c.settings.min_consecutive_windows)
        return (1, c.fa_per_hour, miss, c.settings.smooth_windows, c.settings.min_consecutive_windows)

    return min(candidates, key=rank), candidates


def per_command(thresholds: dict[str, float] | None) -> str:
    return ", ".join(f"{c} {t:.4f}" for c, t in sorted((thresholds or {}).items()))


def format_report(doc: dict[str, Any]) -> str:
    cal = doc["calibration"]
    s = doc["settings"]
    lines = [
        "# Detector calibration", "",
        f"Model `{doc['model']}`; development set `{cal['dev']}` ({cal['negative_s'] / 60:.1f} min keyword-free, "
        f"{cal['n_keyword_clips']} keyword clips, voices {', '.join(cal['dev_voices']) or 'not declared'}).", "",
        f"Chosen: smooth_windows {s['smooth_windows']}, min_consecutive_windows {s['min_consecutive_windows']}, "
        f"on_threshold {s['on_threshold']:.4f}, off_threshold {s['off_threshold']}, refractory_s {s['refractory_s']}: "
        f"{cal['fa_per_hour']:.3g} FA/h on the development negatives (target {cal['target_fa_per_hour']:g}"
        f"{'' if cal['reached'] else ', NOT reached'}), development miss rate "
        f"{'n/a' if cal['miss_rate'] is None else format(cal['miss_rate'], '.3f')}."
        + (f" Per-command on thresholds: {per_command(s.get('class_on_thresholds'))}." if s.get("class_on_thresholds")
           else ""), "",
        "| smooth | consecutive | on threshold | per command | FA/h | reached | dev miss rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cal["candidates"]:
        miss = "n/a" if c["miss_rate"] is None else f"{c['miss_rate']:.3f}"
        lines.append(f"| {c['smooth_windows']} | {c['min_consecutive_windows']} | {c['on_threshold']:.4f} | "
                     f"{per_command(c.get('class_on_thresholds')) or '-'} | "
                     f"{c['fa_per_hour']:.3g} | {'yes' if c['reached'] else 'no'} | {miss} |")
    resolution = 3600.0 / cal["negative_s"]
    lines += ["", f"FA/h resolution: {resolution:.3g} (one false accept in the development negatives)"
              + (f"; a target of {cal['target_fa_per_hour']:g} FA/h below it means none at all, and none in "
                 f"{cal['negative_s'] / 60:.1f} min is not proof of a rate under {resolution:.3g} FA/h on other talk."
                 if cal["target_fa_per_hour"] < resolution else "."),
              "These figures are on the development set, not the evaluation set: `make eval` reports those."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser("Choose and calibrate the detector settings of a model on a development set.", STAGE)
    p.add_argument("--onnx", type=Path, required=True, help="exported model")
    p.add_argument("--dev", type=Path, required=True,
                   help="development set: one folder per class, FONDO = keyword-free audio (pipeline.eval.holdout_tts --split dev)")
    p.add_argument("--out", type=Path, required=True, help="output folder: settings.json, report.md (replaced as a whole)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_stage_args(build_parser(), argv, STAGE)
    setup_logging(args.verbose)
    from pipeline.audio.wav import AudioError, load_audio
    from pipeline.core.provenance import manifest
    from pipeline.eval.evaluate import holdout_layout, holdout_meta
    from pipeline.model.infer import OnnxModel

    if args.target_fa_per_hour < 0 or args.context_s < 0:
        die(f"--target-fa-per-hour {args.target_fa_per_hour} / --context-s {args.context_s}: must be >= 0")
    try:
        # on_threshold is what calibration chooses; 1.0 here only lets any off threshold in [0, 1] through
        base = DetectorSettings(hop_s=args.hop_s, on_threshold=1.0, off_threshold=args.off_threshold,
                                refractory_s=args.refractory_s, background_class=BACKGROUND_CLASS)
        for sw, mc in itertools.product(args.smooth_windows, args.min_consecutive_windows):
            dataclasses.replace(base, smooth_windows=sw, min_consecutive_windows=mc)
    except ValueError as e:
        die(f"{args.params or 'command line'}: {e}")
    model = OnnxModel(args.onnx)
    classes = model.classes
    if BACKGROUND_CLASS not in classes:
        die(f"{args.onnx}: classes {classes} have no {BACKGROUND_CLASS}; the detector needs a background class")
    layout = holdout_layout(args.dev, classes, BACKGROUND_CLASS)
    negatives = layout.get(BACKGROUND_CLASS, [])
    if not negatives:
        die(f"{args.dev}/{BACKGROUND_CLASS}: no keyword-free WAVs to calibrate on; build the development set with "
            "`make holdout-dev` (python -m pipeline.eval.holdout_tts --split dev --out DIR)")
    sr = model.contract.sample_rate
    pos_probs: list[np.ndarray] = []
    pos_labels: list[int] = []
    try:
        neg_probs, negative_s = negative_probs(model, negatives, base.hop_s)
        for cls, files in layout.items():
            if cls == BACKGROUND_CLASS:
                continue
            for f in files:
                streamed = in_context(load_audio(f, sr), sr, args.context_s, seed=len(pos_probs))
                pos_probs.append(stream_probs(model, streamed, base.hop_s))
                pos_labels.append(classes.index(cls))
    except AudioError as e:
        raise StageError(str(e)) from e
    log.info("development set: %.1f min keyword-free, %d keyword clips", negative_s / 60, len(pos_probs))

    best, candidates = choose(neg_probs, negative_s, pos_probs, pos_labels, classes, base,
                              args.smooth_windows, args.min_consecutive_windows, args.target_fa_per_hour,
                              args.class_threshold_floor if args.class_thresholds else None)
    dev_voices = sorted({str(m["voice"]) for m in holdout_meta(args.dev).values() if m.get("voice")})
    doc: dict[str, Any] = {
        "settings": best.settings.as_dict(),
        "model": str(args.onnx), "model_sha256": sha256_file(args.onnx), "classes": list(classes),
        "calibration": {
            "dev": str(args.dev), "dev_voices": dev_voices, "negative_s": negative_s,
            "n_keyword_clips": len(pos_probs), "context_s": args.context_s, "target_fa_per_hour": args.target_fa_per_hour,
            "reached": best.reached, "false_accepts": best.false_accepts, "fa_per_hour": best.fa_per_hour,
            "miss_rate": best.miss_rate, "candidates": [c.as_dict() for c in candidates],
        },
        "provenance": manifest(STAGE, inputs=[args.onnx, *negatives], params=args.params_used),
    }
    with atomic_dir(args.out) as tmp:
        atomic_write_json(tmp / "settings.json", doc)
        atomic_write_text(tmp / "report.md", format_report(doc))
    s = best.settings
    print(f"detector: smooth {s.smooth_windows}, consecutive {s.min_consecutive_windows}, on {s.on_threshold:.4f} -> "
          f"{best.fa_per_hour:.3g} FA/h on {negative_s / 60:.1f} min of development negatives (target "
          f"{args.target_fa_per_hour:g}{'' if best.reached else ', NOT reached'}), development miss rate "
          f"{'n/a' if best.miss_rate is None else format(best.miss_rate, '.3f')}; wrote {args.out}/settings.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
