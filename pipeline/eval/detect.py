"""Streaming keyword detection: 1 s windows every 100 ms -> smoothed probabilities -> events.

The blocks are the seed's flow diagram: sliding windows over the audio, the feature contract
(``pipeline.audio.features.logmel``, batched over windows), the model's class probabilities, a moving average
over windows, hysteresis (an on and an off threshold), a minimum number of consecutive windows above the
on threshold, and a refractory period after each event. The background class (FONDO) never fires.

The state machine and the threshold calibration live in ``pipeline.core.detector`` (numpy only), which
the board runtime runs too; this module feeds it from audio.

Inputs -> outputs: a WAV file and the ONNX model -> events (class, start/end in seconds, score),
printed and optionally written as JSON.

Example::

    python -m pipeline.eval.detect recording.wav --onnx build/model/kws.onnx --json build/detect/recording.json
    python -m pipeline.eval.detect recording.wav --target-fa-per-hour 1 --negatives build/holdout-dev/FONDO \\
        --save-settings build/detect/settings.json

Without ``--settings``, the settings ``make detector`` chose for this model (``build/detector/settings.json``
beside ``build/model/kws.onnx``, ``pipeline.eval.detector_calib``) are used when they exist and were made for
this very model; otherwise the built-in defaults (:class:`DetectorSettings`), with a warning.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.cli import StageError, die, run_main, setup_logging
from pipeline.core.detector import Detector, DetectorSettings, calibrate
from pipeline.core.io import atomic_write_json

if TYPE_CHECKING:
    from pipeline.core.contract import FeatureContract
    from pipeline.model.infer import EmbeddingSplit, OnnxModel

log = logging.getLogger(__name__)

WAV_SUFFIXES = (".wav", ".WAV")


# ---- windows over audio ----------------------------------------------------------------------------

def hop_samples_for(hop_s: float, sample_rate: int) -> int:
    hop = round(hop_s * sample_rate)
    if hop < 1 or abs(hop - hop_s * sample_rate) > 1e-6 * sample_rate:
        raise ValueError(f"hop {hop_s} s is not a whole number of samples at {sample_rate} Hz")
    return hop


def window_starts(n_samples: int, window_samples: int, hop_samples: int) -> np.ndarray:
    """Start sample of every window: 0, hop, 2·hop, … until a window reaches the end of the audio.

    Audio shorter than one window gives one (zero-padded) window; the last window is zero-padded when the
    audio does not end on a hop boundary, so every sample is seen.
    """
    if n_samples <= window_samples:
        return np.zeros(1, dtype=np.int64)
    n = 1 + math.ceil((n_samples - window_samples) / hop_samples)
    return np.arange(n, dtype=np.int64) * hop_samples


def padded_to_windows(audio: np.ndarray, window_samples: int, hop_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 ``audio`` zero-padded so that its last window is whole, :func:`window_starts` of it)."""
    x = np.asarray(audio, dtype=np.float32)
    starts = window_starts(len(x), window_samples, hop_samples)
    need = int(starts[-1]) + window_samples
    if need > len(x):
        x = np.concatenate([x, np.zeros(need - len(x), dtype=np.float32)])
    return x, starts


def iter_window_batches(audio: np.ndarray, window_samples: int, hop_samples: int,
                        batch_windows: int = 256) -> Iterator[np.ndarray]:
    """Yield float32 ``(k, window_samples)`` batches of windows (zero-padded at the end)."""
    x, starts = padded_to_windows(audio, window_samples, hop_samples)
    view = np.lib.stride_tricks.sliding_window_view(x, window_samples)[::hop_samples]
    for b in range(0, len(starts), batch_windows):
        yield np.array(view[b: b + batch_windows])  # a writable copy (the view is read-only; torch warns on those)


def stream_probs(model: OnnxModel, audio: np.ndarray, hop_s: float, batch_windows: int = 256) -> np.ndarray:
    """Class probabilities for every window of ``audio`` (float32 mono at the model's sample rate).

    Each window is what the board scores: its own features, the whole model. Where the model is the
    embedding family and the hop is whole feature frames, the windows of a batch share their features and
    embeddings (:func:`window_embeddings`): the same logits for every window, computed about 3x faster.
    """
    from pipeline.audio.features import logmel
    from pipeline.model.infer import softmax

    contract: FeatureContract = model.contract
    hop = hop_samples_for(hop_s, contract.sample_rate)
    split = _shared_split(model, hop)
    if split is None:
        out = [model.probs(logmel(batch, contract))
               for batch in iter_window_batches(audio, contract.clip_samples, hop, batch_windows)]
    else:
        out = [softmax(split.head_logits(e)) for e in _embedding_batches(model, split, audio, hop, batch_windows)]
    return np.concatenate(out, axis=0).astype(np.float64)


def _shared_split(model: OnnxModel, hop: int) -> EmbeddingSplit | None:
    """The model's graph cut after its embedding where windows ``hop`` samples apart can share embeddings (an
    embedding-family model, a hop of whole feature frames); None elsewhere."""
    return model.embedding_split() if hop % model.contract.hop_length == 0 else None


def _embedding_batches(model: OnnxModel, split: EmbeddingSplit, audio: np.ndarray, hop: int,
                       batch_windows: int) -> Iterator[np.ndarray]:
    """:func:`window_embeddings` of the windows of ``audio`` (zero-padded to whole windows), ``batch_windows`` at a time."""
    c = model.contract
    x, starts = padded_to_windows(audio, c.clip_samples, hop)
    for b in range(0, len(starts), batch_windows):
        yield window_embeddings(model, split, x[starts[b]: starts[min(b + batch_windows, len(starts)) - 1] + c.clip_samples],
                                hop)


def window_embeddings(model: OnnxModel, split: EmbeddingSplit, span: np.ndarray, hop: int) -> np.ndarray:
    """The head's input ``(n_windows, n_embeddings, dim)`` for the windows starting every ``hop`` samples in ``span``.

    The features of the whole span are computed once: a frame depends only on its own samples, so the frames
    of a window that starts on a frame boundary are a slice of them, except where the contract's ``top_db``
    floor lifts some (it is per window): such windows (near digital silence) get their own features. The
    embeddings at every frame a window needs are computed once, one pass of the front end per residue of the
    window starts modulo its stride, and gathered per window.
    """
    from pipeline.audio.features import logmel

    c = model.contract
    x = np.asarray(span, dtype=np.float32)
    n = 1 + (len(x) - c.clip_samples) // hop
    hop_frames = hop // c.hop_length
    raw_contract = dataclasses.replace(c, clip_samples=len(x), n_frames=1 + (len(x) - c.win_length) // c.hop_length,
                                       norm_mean_db=0.0, norm_std_db=1.0, top_db=0.0)
    db = logmel(x, raw_contract)[0, 0]
    feats = (db - np.float32(c.norm_mean_db)) / np.float32(c.norm_std_db)
    first = np.arange(n) * hop_frames
    residues = sorted({int(f) % split.stride_frames for f in first})
    with concurrent.futures.ThreadPoolExecutor(min(model.row_threads, len(residues))) as pool:
        by_residue = dict(zip(residues, pool.map(lambda r: split.embed(feats[r:]), residues)))
    step = split.stride_frames
    out = np.stack([by_residue[f % step][f // step: f // step + split.n_embeddings] for f in (int(f) for f in first)])
    if c.top_db > 0:
        frames = np.lib.stride_tricks.sliding_window_view(np.arange(len(db)), c.n_frames)[first]
        lifted = np.flatnonzero(db.min(axis=1)[frames].min(axis=1) < db.max(axis=1)[frames].max(axis=1) - c.top_db)
        for i in lifted:
            out[i] = split.embed(logmel(x[i * hop: i * hop + c.clip_samples], c)[0, 0])
    return out


def stream_embeddings(model: OnnxModel, audio: np.ndarray, hop_s: float, batch_windows: int = 256) -> np.ndarray:
    """The head's input for every window of ``audio`` that :func:`stream_probs` scores, for an embedding-family
    model whose graph splits after its embedding (:meth:`OnnxModel.embedding_split`): any head trained on the
    same frozen embedding can then score the stream without running the front end again."""
    contract: FeatureContract = model.contract
    hop = hop_samples_for(hop_s, contract.sample_rate)
    split = _shared_split(model, hop)
    if split is None:
        raise ValueError(f"{model.path}: not an embedding-family graph that splits after its embedding at a hop of "
                         f"{hop_s} s; its windows have no shared embeddings")
    return np.concatenate(list(_embedding_batches(model, split, audio, hop, batch_windows)), axis=0)


# Audio streamed around a keyword clip when measuring whether the detector finds it: a real stream has
# quiet before and after the command, and a clip that starts with the word would see the detector's
# smoothing still full of the quiet it assumes before a stream.
DEFAULT_CONTEXT_S = 1.0


def in_context(audio: np.ndarray, sample_rate: int, context_s: float, seed: int = 0) -> np.ndarray:
    """``audio`` with ``context_s`` of noise before and after, at the level of its quietest 50 ms frame."""
    n = int(round(context_s * sample_rate))
    if n <= 0:
        return audio
    frame = max(1, sample_rate // 20)
    usable = audio[: len(audio) // frame * frame].reshape(-1, frame) if len(audio) >= frame else audio[None, :]
    floor = float(np.sqrt(np.min(np.mean(usable.astype(np.float64) ** 2, axis=1)))) if usable.size else 0.0
    rng = np.random.default_rng(seed)
    before, after = (np.float32(floor) * rng.standard_normal(n).astype(np.float32) for _ in range(2))
    return np.concatenate([before, np.asarray(audio, dtype=np.float32), after])


def wav_files(paths: Iterable[Path]) -> list[Path]:
    """WAV files named directly or found (recursively, sorted) under the given folders."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.suffix in WAV_SUFFIXES and f.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            die(f"{p}: no such file or folder; give a WAV file or a folder of WAVs")
    return found


def negative_probs(model: OnnxModel, paths: Sequence[Path], hop_s: float) -> tuple[list[np.ndarray], float]:
    """Per-window probabilities for each keyword-free file, and their total duration in seconds."""
    from pipeline.audio.wav import load_audio

    seqs, total_s = [], 0.0
    for f in paths:
        audio = load_audio(f, model.contract.sample_rate)
        total_s += len(audio) / model.contract.sample_rate
        seqs.append(stream_probs(model, audio, hop_s))
    return seqs, total_s


# ---- CLI ---------------------------------------------------------------------------------------------

def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Detector flags shared with pipeline.eval.evaluate; unset flags leave the settings file/defaults alone."""
    d = DetectorSettings()
    g = parser.add_argument_group("detector settings (defaults: DetectorSettings)")
    g.add_argument("--settings", type=Path, help="JSON detector settings (e.g. written by --save-settings)")
    g.add_argument("--thresholds", help="ON[,OFF] hysteresis thresholds, shorthand for the two flags below")
    g.add_argument("--on-threshold", type=float, help=f"fire threshold on the smoothed probability ({d.on_threshold})")
    g.add_argument("--off-threshold", type=float, help=f"re-arm threshold ({d.off_threshold})")
    g.add_argument("--hop-s", type=float, help=f"window hop in seconds ({d.hop_s})")
    g.add_argument("--smooth-windows", type=int, help=f"moving-average length in windows ({d.smooth_windows})")
    g.add_argument("--min-consecutive-windows", type=int, help=f"windows in a row above on ({d.min_consecutive_windows})")
    g.add_argument("--refractory-s", type=float, help=f"quiet time after an event, s ({d.refractory_s})")
    g.add_argument("--background-class", help=f"class that never fires ({d.background_class})")


def settings_from_args(args: argparse.Namespace) -> DetectorSettings:
    base: dict[str, Any] = DetectorSettings().as_dict()
    if args.settings is not None:
        try:
            data = json.loads(args.settings.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            die(f"{args.settings}: cannot read detector settings JSON ({e}); write it with --save-settings")
        base.update(data.get("settings", data) if isinstance(data, dict) else {})
    if args.thresholds is not None:
        try:
            parts = [float(x) for x in str(args.thresholds).split(",")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            die(f"--thresholds {args.thresholds!r}: expected ON or ON,OFF (e.g. 0.9,0.5)")
        base["on_threshold"] = parts[0]
        if len(parts) == 2:
            base["off_threshold"] = parts[1]
    for name in ("on_threshold", "off_threshold", "hop_s", "smooth_windows", "min_consecutive_windows",
                 "refractory_s", "background_class"):
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    if base["off_threshold"] > base["on_threshold"] and args.off_threshold is None:
        base["off_threshold"] = base["on_threshold"]
    try:
        return DetectorSettings.from_mapping(base)
    except (ValueError, TypeError) as e:
        die(f"{args.settings or 'command line'}: {e}; fix the detector settings")
    raise AssertionError("unreachable")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Streaming keyword detection over a WAV file.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("wav", type=Path, help="audio file (any length; converted to the model's sample rate)")
    p.add_argument("--onnx", type=Path, default=Path("build/model/kws.onnx"), help="exported model")
    p.add_argument("--json", type=Path, help="write the events (and settings) to this JSON file")
    p.add_argument("--target-fa-per-hour", type=float,
                   help="calibrate the on threshold on --negatives so FA/h <= this before detecting")
    p.add_argument("--negatives", type=Path, nargs="+", default=[],
                   help="keyword-free WAV files or folders for --target-fa-per-hour")
    p.add_argument("--save-settings", type=Path, help="write the (calibrated) detector settings here as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_settings_arguments(p)
    return p


def calibrated_settings_for(onnx: Path) -> Path | None:
    """``make detector``'s settings for this model (``<build>/detector/settings.json``), if made for it."""
    from pipeline.core.io import sha256_file

    path = onnx.parent.parent / "detector" / "settings.json"
    if not path.is_file():
        log.warning("%s not found: built-in detector defaults (not calibrated for this model; run `make detector`)", path)
        return None
    try:
        made_for = json.loads(path.read_text(encoding="utf-8")).get("model_sha256")
    except (OSError, json.JSONDecodeError, AttributeError):
        made_for = None
    if made_for != sha256_file(onnx):
        log.warning("%s was not calibrated for %s (stale); built-in detector defaults (run `make detector`)", path, onnx)
        return None
    log.info("detector settings: %s (calibrated for this model by pipeline.eval.detector_calib)", path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from pipeline.audio.wav import AudioError, load_audio
    from pipeline.model.infer import OnnxModel

    if args.settings is None and args.onnx.is_file():
        args.settings = calibrated_settings_for(args.onnx)
    settings = settings_from_args(args)
    model = OnnxModel(args.onnx)
    try:
        det = Detector(settings, model.classes, model.contract.clip_samples / model.contract.sample_rate)
    except ValueError as e:
        die(f"{args.onnx}: {e}")
    calibration = None
    try:
        audio = load_audio(args.wav, model.contract.sample_rate)
        if args.target_fa_per_hour is not None:
            if not args.negatives:
                die("--target-fa-per-hour needs --negatives DIR_OR_WAV …: keyword-free audio to calibrate on")
            neg_files = wav_files(args.negatives)
            if not neg_files:
                die(f"{' '.join(map(str, args.negatives))}: no WAV files to calibrate on; give keyword-free WAVs")
            seqs, neg_s = negative_probs(model, neg_files, settings.hop_s)
            calibration = calibrate(seqs, neg_s, model.classes, settings, args.target_fa_per_hour)
            settings = calibration.settings
            det = Detector(settings, model.classes, det.window_s)
    except AudioError as e:
        raise StageError(str(e)) from e
    duration_s = len(audio) / model.contract.sample_rate
    probs = stream_probs(model, audio, settings.hop_s)
    events = det.run(probs)

    print(f"{args.wav}: {duration_s:.2f} s, {len(probs)} windows of {det.window_s:g} s every {settings.hop_s:g} s")
    if calibration is not None:
        print(f"calibrated on {calibration.negative_s / 60:.1f} min of negatives: on_threshold="
              f"{settings.on_threshold:.4f} -> {calibration.fa_per_hour:.3g} FA/h "
              f"(target {calibration.target_fa_per_hour:g}{'' if calibration.reached else ', NOT reached'})")
    for e in events:
        print(f"  {e.start_s:8.2f}-{e.end_s:.2f} s  {e.class_name:<12} score {e.score:.3f}")
    print(f"{len(events)} event(s); settings {json.dumps(settings.as_dict())}")

    settings_doc = {"settings": settings.as_dict(), "model": str(args.onnx), "classes": model.classes}
    if calibration is not None:
        settings_doc["calibration"] = {
            "negatives": [str(p) for p in args.negatives], "negative_s": calibration.negative_s,
            "false_accepts": calibration.false_accepts, "fa_per_hour": calibration.fa_per_hour,
            "target_fa_per_hour": calibration.target_fa_per_hour, "reached": calibration.reached,
        }
    if args.save_settings is not None:
        atomic_write_json(args.save_settings, settings_doc)
    if args.json is not None:
        atomic_write_json(args.json, {
            "file": str(args.wav), "duration_s": duration_s, "n_windows": len(probs),
            "window_s": det.window_s, **settings_doc, "events": [e.as_dict() for e in events],
        })
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
