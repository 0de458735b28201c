"""Held-out evaluation that cannot leak: clip accuracy on unseen voices, false accepts per hour.

The holdout folder has one sub-folder per class, named like the seed classes. Each file in a keyword folder
is streamed with ``--context-s`` of quiet before and after it, as a command reaches the board; the window
(every ``hop_s``) that looks least like background decides its top-1 (so a file of about 1 s is slid over
like a longer one), and the streaming detector runs on the same stream for the miss rate. Every file under the background
folder (FONDO) is keyword-free audio of any length, streamed through :class:`pipeline.core.detector.Detector`:
each event there is a false accept. A threshold sweep gives the DET curve (miss rate of the streaming
detector on the keyword files against FA/h on the background files) and the miss rate at fixed FA/h, and for
each keyword file the highest on threshold at which the detector still finds it, with the false accepts per hour
the background files give at that threshold: what finding that file costs. ``--negatives DIR`` takes the
keyword-free audio from elsewhere (e.g. the hour of talk ``make holdout-tts`` writes) in place of the holdout's
own FONDO, so a folder of a few recordings (a seeds folder of another person) is judged against a real hour.
When the holdout carries a ``manifest.json`` with per-file ``snr_db`` / ``voice`` (as
``pipeline.eval.holdout_tts`` writes), accuracy is also broken down by SNR bucket and by voice.

Leak check, before anything is scored: the run refuses when any holdout file's sha256 equals a training
seed or dataset clip (``--seeds``, ``--dataset``, ``--train-manifest`` inputs) or when a voice the
holdout declares is a training voice (``pipeline.authoring.demo_seeds`` plus voices named in the training manifest).

The training metrics (``metrics.json`` next to the model: augmentations of the same seed recordings)
are copied in under ``optimistic_training_metrics``, labelled as optimistic.

Inputs -> outputs: ONNX model + holdout folder -> ``<out>/summary.json`` (written last), ``report.md``,
``det_curve.png``, ``clips.jsonl``; the summary is printed.

Example::

    python -m pipeline.eval.evaluate --onnx build/model/kws.onnx --holdout build/holdout-tts --out build/eval \\
        --train-manifest build/dataset/manifest.json --seeds data/demo-seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.audio.tts import speaker, training_voices
from pipeline.core.cli import StageError, die, run_main, setup_logging
from pipeline.core.detector import (
    DEFAULT_THRESHOLD_GRID,
    Detector,
    DetectorSettings,
    fa_per_hour,
    smooth_streams,
    with_on_threshold,
)
from pipeline.core.io import atomic_dir, atomic_write_json, atomic_write_text, sha256_file
from pipeline.eval.detect import DEFAULT_CONTEXT_S, add_settings_arguments, in_context, settings_from_args, stream_probs

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

STAGE = "evaluate"
WAV_SUFFIXES = (".wav", ".WAV")
FIXED_FA_PER_HOUR: tuple[float, ...] = (0.5, 1.0, 5.0)
MAX_FILES_LISTED = 50  # keyword files listed one by one in the summary and report (clips.jsonl has them all)
OPTIMISTIC_LABEL = ("OPTIMISTIC: measured on augmentations of the same seed recordings the model was trained "
                    "on (same speaker, same takes); not an estimate of accuracy on other voices")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VOICE_KEYS = ("voice", "voices", "tts_voice", "tts_voices", "training_voice", "training_voices")


class LeakError(StageError):
    """Holdout material also appears in training."""


# ---- leak check ----------------------------------------------------------------------------------------

def _walk(obj: Any) -> Iterable[tuple[str | None, Any]]:
    """(key, value) for every value in a nested JSON document (key None for list items)."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield str(k), v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield None, v
            yield from _walk(v)


def hashes_in(doc: Any) -> set[str]:
    """Every sha256 hex digest found anywhere in a manifest (provenance inputs, per-file records)."""
    return {v for _, v in _walk(doc) if isinstance(v, str) and _SHA256.match(v)}


def voices_in(doc: Any) -> set[str]:
    """Every voice named under a voice-like key anywhere in a manifest."""
    out: set[str] = set()
    for k, v in _walk(doc):
        if k in _VOICE_KEYS:
            out.update(str(x) for x in (v if isinstance(v, list) else [v]) if isinstance(x, str) and x)
    return out


def wav_hashes(folder: Path) -> dict[str, str]:
    """sha256 -> path for every WAV under ``folder``."""
    return {sha256_file(p): str(p) for p in sorted(folder.rglob("*")) if p.suffix in WAV_SUFFIXES and p.is_file()}


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        die(f"{path}: {what} not found; build it first or give the right path")
    except (OSError, json.JSONDecodeError) as e:
        die(f"{path}: cannot read {what} ({e}); rebuild it")
    raise AssertionError("unreachable")


def training_material(train_manifest: Path | None, dataset: Path | None, seeds: Path | None) -> tuple[dict[str, str], set[str]]:
    """(sha256 -> where it was seen, voice names) of everything training used or may have used."""
    hashes: dict[str, str] = {}
    voices: set[str] = set(training_voices())
    docs: list[tuple[Path, Any]] = []
    if train_manifest is not None:
        docs.append((train_manifest, _read_json(train_manifest, "training manifest")))
    if dataset is not None:
        if not dataset.is_dir():
            die(f"{dataset}: dataset folder not found; build it with `make dataset` or drop --dataset")
        hashes.update({h: f"dataset clip {p}" for h, p in wav_hashes(dataset).items()})
        if (dataset / "manifest.json").is_file():
            docs.append((dataset / "manifest.json", _read_json(dataset / "manifest.json", "dataset manifest")))
    if seeds is not None:
        if not seeds.is_dir():
            die(f"{seeds}: seeds folder not found; give the folder the model was trained from")
        hashes.update({h: f"training seed {p}" for h, p in wav_hashes(seeds).items()})
        if (seeds / "manifest.json").is_file():
            docs.append((seeds / "manifest.json", _read_json(seeds / "manifest.json", "seeds manifest")))
    for path, doc in docs:
        hashes.update({h: f"listed in {path}" for h in hashes_in(doc) if h not in hashes})
        voices |= voices_in(doc)
    return hashes, voices


def leak_check(holdout_files: Sequence[Path], holdout_voices: Mapping[str, str], train_hashes: Mapping[str, str],
               train_voices: Iterable[str]) -> dict[str, Any]:
    """Raise LeakError naming the offending files; else return what was checked.

    ``holdout_voices``: holdout file (relative path) -> declared voice.
    """
    hashed = {str(p): sha256_file(p) for p in holdout_files}
    same = [(p, train_hashes[h]) for p, h in hashed.items() if h in train_hashes]
    if same:
        shown = "; ".join(f"{p} == {where}" for p, where in same[:5])
        raise LeakError(f"{len(same)} holdout file(s) are training material ({shown}); "
                        "evaluate on recordings that played no part in training")
    train_speakers = {speaker(v) for v in train_voices}
    bad = sorted((f, v) for f, v in holdout_voices.items() if speaker(v) in train_speakers)
    if bad:
        shown = "; ".join(f"{f}: voice {v}" for f, v in bad[:5])
        raise LeakError(f"{len(bad)} holdout file(s) use a training voice or its speaker ({shown}); "
                        "use other voices (pipeline.eval.holdout_tts EVAL_VOICES)")
    return {"status": "passed", "holdout_files_hashed": len(hashed), "training_hashes": len(train_hashes),
            "training_voices": sorted(train_voices), "holdout_voices": sorted(set(holdout_voices.values()))}


# ---- scoring ---------------------------------------------------------------------------------------------

def best_window(probs: np.ndarray, background_index: int) -> int:
    """The window that looks least like background (label-blind choice of the 1 s to score)."""
    return int(np.argmin(probs[:, background_index]))


def snr_bucket(snr_db: Any) -> str:
    return "clean" if snr_db is None else f"{float(snr_db):g} dB"


def _bucket_order(name: str) -> tuple[int, float, str]:
    """'clean' first, then SNR buckets from high to low, then anything else by name."""
    if name == "clean":
        return (0, 0.0, name)
    m = re.fullmatch(r"(-?[0-9.]+) dB", name)
    return (1, -float(m.group(1)), name) if m else (2, 0.0, name)


def accuracy_table(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(bool(r["correct"]))
    return {k: {"n": len(groups[k]), "correct": int(sum(groups[k])), "accuracy": sum(groups[k]) / len(groups[k])}
            for k in sorted(groups, key=_bucket_order)}


def detector_hits(smoothed: Sequence[np.ndarray], labels: Sequence[int], settings: DetectorSettings,
                  classes: Sequence[str]) -> list[bool]:
    """For each keyword clip: did the streaming detector fire its class at least once?"""
    det = Detector(settings, classes)
    return [any(e.class_index == y for e in det.run_smoothed(s)) for s, y in zip(smoothed, labels, strict=True)]


def _sweep(pos_s: Sequence[np.ndarray], pos_labels: Sequence[int], neg_s: Sequence[np.ndarray], negative_s: float,
           settings: DetectorSettings, classes: Sequence[str],
           thresholds: Sequence[float]) -> tuple[list[dict[str, float]], list[float | None]]:
    """The sweep's curve over smoothed streams, and each keyword clip's highest firing threshold (or None)."""
    curve = []
    best: list[float | None] = [None] * len(pos_s)
    for t in sorted({float(x) for x in thresholds}):
        s = with_on_threshold(settings, t)
        det = Detector(s, classes)
        fa = sum(len(det.run_smoothed(x)) for x in neg_s)
        hits = detector_hits(pos_s, pos_labels, s, classes)
        best = [t if hit else b for b, hit in zip(best, hits, strict=True)]
        curve.append({
            "on_threshold": t, "false_accepts": fa,
            "fa_per_hour": fa_per_hour(fa, negative_s) if negative_s > 0 else None,
            "miss_rate": (1.0 - sum(hits) / len(hits)) if hits else None,
        })
    return curve, best


def det_sweep(pos_probs: Sequence[np.ndarray], pos_labels: Sequence[int], neg_probs: Sequence[np.ndarray],
              negative_s: float, settings: DetectorSettings, classes: Sequence[str],
              thresholds: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> list[dict[str, float]]:
    """Miss rate (keyword clips) and FA/h (negatives) of the streaming detector for each on threshold."""
    return _sweep(smooth_streams(pos_probs, settings, classes), pos_labels,
                  smooth_streams(neg_probs, settings, classes), negative_s, settings, classes, thresholds)[0]


def firing_thresholds(pos_probs: Sequence[np.ndarray], pos_labels: Sequence[int], settings: DetectorSettings,
                      classes: Sequence[str], thresholds: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> list[float | None]:
    """For each keyword clip, the highest on threshold of the grid at which the detector (``settings``' structure)
    fires the clip's class; None where it never does."""
    return _sweep(smooth_streams(pos_probs, settings, classes), pos_labels, [], 0.0, settings, classes, thresholds)[1]


def fa_per_hour_at(curve: Sequence[Mapping[str, Any]], threshold: float | None) -> float | None:
    """The negatives' FA/h at an on threshold of the sweep (None: no threshold, or no negatives)."""
    if threshold is None:
        return None
    return next((p["fa_per_hour"] for p in curve if p["on_threshold"] == threshold), None)


def miss_at_fa(curve: Sequence[Mapping[str, Any]], targets: Sequence[float]) -> dict[str, Any]:
    """For each FA/h target: the lowest threshold whose FA/h (and every higher one's) meets it, and its miss rate."""
    out: dict[str, Any] = {}
    for target in targets:
        chosen = None
        for point in reversed(curve):
            if point["fa_per_hour"] is None or point["fa_per_hour"] > target:
                break
            chosen = point
        out[f"{target:g}"] = (
            {"on_threshold": chosen["on_threshold"], "miss_rate": chosen["miss_rate"],
             "fa_per_hour": chosen["fa_per_hour"]}
            if chosen is not None else
            {"on_threshold": None, "miss_rate": None, "fa_per_hour": None,
             "note": "not reached by any threshold searched (or no negatives)"}
        )
    return out


def plot_det(curve: Sequence[Mapping[str, Any]], operating: Mapping[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(c["fa_per_hour"], c["miss_rate"]) for c in curve if c["fa_per_hour"] is not None and c["miss_rate"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, [100 * y for y in ys], marker=".", lw=1, label="threshold sweep")
    else:
        ax.text(0.5, 0.5, "no keyword-free (FONDO) audio in the holdout:\nno FA/h, no DET curve",
                ha="center", va="center", transform=ax.transAxes)
    if operating.get("fa_per_hour") is not None and operating.get("miss_rate") is not None:
        ax.plot([operating["fa_per_hour"]], [100 * operating["miss_rate"]], "r*", ms=12, label="detector settings")
    for fa in FIXED_FA_PER_HOUR:
        ax.axvline(fa, color="grey", ls=":", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.5)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("false accepts per hour (keyword-free audio)")
    ax.set_ylabel("miss rate, % (keyword clips, streaming detector)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the run ---------------------------------------------------------------------------------------------

def holdout_layout(holdout: Path, classes: Sequence[str], background: str) -> dict[str, list[Path]]:
    """class -> sorted WAV files; folders must be model classes; every non-WAV file is counted and reported."""
    if not holdout.is_dir():
        die(f"{holdout}: holdout folder not found; build one with `make holdout-tts` or give HOLDOUT=<dir>")
    layout: dict[str, list[Path]] = {}
    skipped = 0
    for d in sorted(p for p in holdout.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in classes:
            die(f"{d}: folder {d.name!r} is not a class of the model {list(classes)}; rename or remove it")
        files = sorted(p for p in d.rglob("*") if p.is_file())
        wavs = [p for p in files if p.suffix in WAV_SUFFIXES]
        skipped += len(files) - len(wavs)
        if wavs:
            layout[d.name] = wavs
    if skipped:
        log.warning("%s: ignored %d non-WAV file(s) in the class folders", holdout, skipped)
    if not any(c != background for c in layout):
        die(f"{holdout}: no WAV files in any keyword folder ({[c for c in classes if c != background]}); "
            "put held-out recordings of the commands there")
    return layout


def negative_files(folder: Path) -> list[Path]:
    """The WAVs under ``folder`` (recursively, sorted), for ``--negatives``."""
    if not folder.is_dir():
        die(f"{folder}: --negatives folder not found; give a folder of keyword-free WAVs (e.g. the build's "
            "holdout-tts/FONDO, made by `make holdout-tts`)")
    wavs = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WAV_SUFFIXES)
    if not wavs:
        die(f"{folder}: no WAV files to count false accepts on; give a folder of keyword-free WAVs")
    return wavs


def holdout_meta(holdout: Path) -> dict[str, dict[str, Any]]:
    """relative path -> per-file record from ``<holdout>/manifest.json`` (empty if there is none)."""
    path = holdout / "manifest.json"
    if not path.is_file():
        return {}
    doc = _read_json(path, "holdout manifest")
    files = doc.get("files", []) if isinstance(doc, dict) else []
    return {str(f["path"]): f for f in files if isinstance(f, dict) and "path" in f}


def optimistic_metrics(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    return {"label": OPTIMISTIC_LABEL, "source": str(path), "metrics": _read_json(path, "training metrics")}


def format_report(s: Mapping[str, Any]) -> str:
    lines = ["# Held-out evaluation", "", f"model: `{s['model']['path']}` (scored: {s['model']['scored']})  "
             f"holdout: `{s['holdout']['path']}`"
             + (f"  keyword-free audio: `{s['holdout']['negatives']}`" if s["holdout"].get("negatives") else ""), ""]
    top1 = s["heldout_top1"]
    lines.append(f"**Held-out top-1 (keyword clips): {top1:.3f}** on {s['n_keyword_clips']} clips "
                 f"(leak check: {s['leak_check']['status'].split(' ')[0]})")
    if s["fa_per_hour"] is not None:
        lines.append(f"**False accepts: {s['false_accepts']} in {s['negative_hours'] * 60:.1f} min of keyword-free "
                     f"audio = {s['fa_per_hour']:.2f} FA/h** (resolution {s['fa_per_hour_resolution']:.2f} FA/h)")
    else:
        lines.append("False accepts: no keyword-free (FONDO) audio in the holdout, FA/h not measured")
    if s.get("detector_miss_rate") is not None:
        lines.append(f"Streaming detector miss rate on the keyword clips: {s['detector_miss_rate']:.3f}")
    lines.append(f"Detector settings: `{json.dumps(s['detector_settings'])}`")
    lines += ["", "| class | n | accuracy |", "|---|---|---|"]
    lines += [f"| {c} | {v['n']} | {v['accuracy']:.3f} |" for c, v in s["per_class"].items()]
    conf = s["confusion"]
    lines += ["", "Confusion (rows: true, columns: predicted)", "", "| true \\ pred | " + " | ".join(conf["predicted"]) + " |",
              "|---" * (len(conf["predicted"]) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(str(n) for n in row) + " |" for t, row in zip(conf["true"], conf["matrix"])]
    lines += ["", "Miss rate at fixed FA/h (threshold sweep on these negatives)", "", "| FA/h ≤ | on threshold | miss rate |",
              "|---|---|---|"]
    for k, v in s["miss_rate_at_fa_per_hour"].items():
        thr = "n/a" if v["on_threshold"] is None else f"{v['on_threshold']:.4f}"
        miss = "n/a" if v["miss_rate"] is None else f"{v['miss_rate']:.3f}"
        lines.append(f"| {k} | {thr} | {miss} |")
    files = s.get("keyword_files")
    if files:
        lines += ["", "Per keyword file: found by the detector; the highest on threshold that still finds it and the "
                  "false accepts per hour the keyword-free audio gives there", "",
                  "| file | class | top-1 (p) | found | found up to | FA/h there |", "|---|---|---|---|---|---|"]
        for r in files:
            upto = "never" if r["found_up_to"] is None else f"{r['found_up_to']:.4f}"
            fa = "n/a" if r["fa_per_hour_there"] is None else f"{r['fa_per_hour_there']:.2f}"
            lines.append(f"| {r['path']} | {r['class']} | {r['predicted']} ({r['confidence']:.3f}) | "
                         f"{'yes' if r['found'] else 'no'} | {upto} | {fa} |")
    for title, key in (("Accuracy by SNR", "accuracy_by_snr"), ("Accuracy by voice", "accuracy_by_voice")):
        if s.get(key):
            lines += ["", title, "", "| bucket | n | accuracy |", "|---|---|---|"]
            lines += [f"| {b} | {v['n']} | {v['accuracy']:.3f} |" for b, v in s[key].items()]
    opt = s.get("optimistic_training_metrics")
    if opt:
        acc = opt["metrics"].get("test_accuracy", opt["metrics"].get("accuracy")) if isinstance(opt["metrics"], dict) else None
        lines += ["", f"Training metrics ({opt['source']}): {OPTIMISTIC_LABEL}."]
        if acc is not None:
            lines.append(f"Optimistic test accuracy: {acc}")
    lines += ["", f"Leak check: {s['leak_check']['status']}", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Held-out (cross-speaker) evaluation with a leak check.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True, help="exported model (pipeline.stages.export)")
    p.add_argument("--holdout", type=Path, required=True, help="one folder per class; FONDO = keyword-free audio")
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole)")
    p.add_argument("--negatives", type=Path,
                   help="keyword-free audio (a folder of WAVs, searched recursively) used in place of the holdout's "
                        "own FONDO folder, e.g. the evaluation talk of `make holdout-tts`")
    p.add_argument("--train-manifest", type=Path, help="training dataset manifest.json (sha256s and voices)")
    p.add_argument("--dataset", type=Path, help="training dataset folder: every clip is hashed for the leak check")
    p.add_argument("--seeds", type=Path, help="training seeds folder: every seed is hashed for the leak check")
    p.add_argument("--skip-leak-check", action="store_true",
                   help="evaluate without training material to compare (recorded as 'skipped' in the summary)")
    p.add_argument("--metrics", type=Path, help="training metrics.json to copy in as optimistic (default: next to --onnx)")
    p.add_argument("--context-s", type=float, default=DEFAULT_CONTEXT_S,
                   help="quiet streamed before and after each keyword file when measuring the detector's miss rate, s")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_settings_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from pipeline.audio.wav import AudioError, load_audio
    from pipeline.core.provenance import manifest
    from pipeline.model.infer import OnnxModel

    settings = settings_from_args(args)
    if args.context_s < 0:
        die(f"--context-s {args.context_s}: must be >= 0")
    model = OnnxModel(args.onnx)
    classes = model.classes
    try:
        Detector(settings, classes)
    except ValueError as e:
        die(f"{args.onnx}: {e}")
    bg = classes.index(settings.background_class)
    layout = holdout_layout(args.holdout, classes, settings.background_class)
    if args.negatives is not None:
        negatives = negative_files(args.negatives)
        if settings.background_class in layout:
            log.info("%s/%s: not used; the keyword-free audio is %s (--negatives)", args.holdout,
                     settings.background_class, args.negatives)
        layout[settings.background_class] = negatives
    meta = holdout_meta(args.holdout)
    if settings.background_class not in layout:
        log.warning("%s: no %s folder: false accepts per hour cannot be measured", args.holdout, settings.background_class)
    all_files = [f for fs in layout.values() for f in fs]

    if args.skip_leak_check:
        leak = {"status": "skipped (--skip-leak-check): the holdout was NOT checked against training material"}
        log.warning("leak check skipped")
    else:
        if args.train_manifest is None and args.dataset is None and args.seeds is None:
            die("no training material to check the holdout against; give --train-manifest/--dataset/--seeds "
                "(or --skip-leak-check to evaluate unchecked)")
        train_hashes, train_voices = training_material(args.train_manifest, args.dataset, args.seeds)
        declared = {rel: str(m["voice"]) for rel, m in meta.items() if m.get("voice")}
        holdout_manifest = args.holdout / "manifest.json"
        if holdout_manifest.is_file():
            doc = _read_json(holdout_manifest, "holdout manifest")
            declared.update({f"manifest eval voice #{i}": str(v)
                             for i, v in enumerate(doc.get("eval_voices", []) if isinstance(doc, dict) else [])})
        leak = leak_check(all_files, declared, train_hashes, train_voices)
        log.info("leak check passed: %d holdout files vs %d training hashes and voices %s",
                 len(all_files), len(train_hashes), sorted(train_voices))

    sr = model.contract.sample_rate
    clip_rows: list[dict[str, Any]] = []
    pos_probs: list[np.ndarray] = []
    pos_labels: list[int] = []
    neg_probs: list[np.ndarray] = []
    negative_s = 0.0
    fa_events: list[dict[str, Any]] = []
    det = Detector(settings, classes, model.contract.clip_samples / sr)
    try:
        for cls, files in layout.items():
            for f in files:
                rel = (f.relative_to(args.holdout).as_posix() if f.is_relative_to(args.holdout)
                       else f"negatives/{f.relative_to(args.negatives).as_posix()}")
                audio = load_audio(f, sr)
                if cls == settings.background_class:
                    probs = stream_probs(model, audio, settings.hop_s)
                    negative_s += len(audio) / sr
                    neg_probs.append(probs)
                    fa_events += [{"file": rel, **e.as_dict()} for e in det.run(probs)]
                    continue
                # a command inside a stream, with quiet before and after it, as the board hears it: the detector
                # runs on it, and the clip's top-1 comes from its best window, so a file of about 1 s is slid
                # over like any other instead of being scored by its one window
                probs = stream_probs(model, in_context(audio, sr, args.context_s, seed=len(pos_probs)), settings.hop_s)
                w = best_window(probs, bg)
                pred = int(np.argmax(probs[w]))
                m = meta.get(rel, {})
                clip_rows.append({
                    "path": rel, "class": cls, "predicted": classes[pred], "correct": classes[pred] == cls,
                    "window_start_s": round(w * settings.hop_s - args.context_s, 4), "confidence": float(probs[w, pred]),
                    "snr_bucket": snr_bucket(m.get("snr_db")), "voice": m.get("voice", "unknown"),
                })
                pos_probs.append(probs)
                pos_labels.append(classes.index(cls))
            log.info("%s: %d file(s) scored", cls, len(files))
    except AudioError as e:
        raise StageError(str(e)) from e

    keyword_classes = [c for c in classes if c != settings.background_class]
    true_classes = [c for c in keyword_classes if c in layout]
    matrix = [[sum(1 for r in clip_rows if r["class"] == t and r["predicted"] == p) for p in classes] for t in true_classes]
    n_correct = sum(r["correct"] for r in clip_rows)
    pos_s = smooth_streams(pos_probs, settings, classes)
    hits = detector_hits(pos_s, pos_labels, settings, classes)
    curve, firing = _sweep(pos_s, pos_labels, smooth_streams(neg_probs, settings, classes), negative_s, settings,
                           classes, DEFAULT_THRESHOLD_GRID)
    for row, hit, upto in zip(clip_rows, hits, firing, strict=True):
        row.update(found=hit, found_up_to=upto, fa_per_hour_there=fa_per_hour_at(curve, upto))
    fa = len(fa_events)
    operating = {"fa_per_hour": fa_per_hour(fa, negative_s) if negative_s > 0 else None,
                 "miss_rate": 1.0 - sum(hits) / len(hits)}
    has_snr = any(m.get("snr_db") is not None for m in meta.values())
    has_voice = any(m.get("voice") for m in meta.values())

    summary: dict[str, Any] = {
        "heldout_top1": n_correct / len(clip_rows),
        "n_keyword_clips": len(clip_rows),
        "per_class": accuracy_table(clip_rows, "class"),
        "confusion": {"true": true_classes, "predicted": list(classes), "matrix": matrix},
        "false_accepts": fa,
        "negative_hours": negative_s / 3600.0,
        "fa_per_hour": operating["fa_per_hour"],
        "fa_per_hour_resolution": 3600.0 / negative_s if negative_s > 0 else None,
        "n_negative_files": len(neg_probs),
        "detector_settings": settings.as_dict(),
        "detector_miss_rate": operating["miss_rate"],
        "miss_rate_at_fa_per_hour": miss_at_fa(curve, FIXED_FA_PER_HOUR),
        "keyword_files": clip_rows if len(clip_rows) <= MAX_FILES_LISTED else None,
        "accuracy_by_snr": accuracy_table(clip_rows, "snr_bucket") if has_snr else None,
        "accuracy_by_voice": accuracy_table(clip_rows, "voice") if has_voice else None,
        "det_curve": curve,
        "false_accept_events": fa_events[:500],
        "leak_check": leak,
        "optimistic_training_metrics": optimistic_metrics(args.metrics or args.onnx.parent / "metrics.json"),
        "model": {"path": str(args.onnx), "sha256": sha256_file(args.onnx), "classes": list(classes),
                  "scored": model.metadata.get("scored", "FP32 ONNX"),
                  "contract": model.contract.as_dict()},
        "holdout": {"path": str(args.holdout), "negatives": None if args.negatives is None else str(args.negatives),
                    "files": {c: len(fs) for c, fs in layout.items()},
                    "manifest": bool(meta)},
        "scoring": {"clips": "argmax of the 1 s window (hop_s apart) with the lowest background probability, the "
                             f"clip streamed with {args.context_s:g} s of quiet before and after it",
                    "false_accepts": "every detector event on the background-class files",
                    "miss_rate": "keyword clip on which the streaming detector never fires its class, the clip "
                                 f"streamed with {args.context_s:g} s of quiet (its own floor level) before and after",
                    "context_s": args.context_s},
    }
    inputs = [args.onnx] + ([args.train_manifest] if args.train_manifest else [])
    summary["provenance"] = manifest(STAGE, inputs=inputs, params={"detector_settings": settings.as_dict()})["provenance"]
    report = format_report(summary)
    title = (f"DET: {len(clip_rows)} keyword clips, {negative_s / 60:.1f} min keyword-free audio\n"
             f"{args.onnx}  vs  {args.holdout}")
    with atomic_dir(args.out) as tmp:
        plot_det(curve, operating, tmp / "det_curve.png", title)
        atomic_write_text(tmp / "clips.jsonl", "".join(json.dumps(r) + "\n" for r in clip_rows))
        atomic_write_text(tmp / "report.md", report)
        atomic_write_json(tmp / "summary.json", summary)
    print(report)
    print(f"wrote {args.out / 'summary.json'}, report.md, det_curve.png, clips.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
