"""Stage 2, features: the dataset clips -> packed log-Mel features (``pipeline.audio.features.logmel``).

Stage: ``<dataset>/clips.jsonl`` + the WAVs + ``<dataset>/manifest.json`` ->
``<out>/features.npy`` (float32 (N, 1, 98, 64), clips.jsonl order), ``<out>/index.jsonl`` (one row per clip with
a train/val/test split drawn from a hash of the clip path, no RNG) and ``<out>/manifest.json`` (written last).

    python -m pipeline.stages.features --dataset build/dataset --out build/features

Single-file mode (shape and statistics; a longer file is reduced to its loudest window, a shorter one is
zero-padded on both sides; ``--plot`` writes a spectrogram PNG, ``--out`` the (1, 1, 98, 64) tensor as .npy):

    python -m pipeline.stages.features some.wav --plot some.png
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.features import (
    CONTRACT_KEYS,
    SPLITS,
    FeatureError,
    logmel,
    loudest_window,
    read_clip,
    split_of,
)
from pipeline.core.cli import parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.contract import ContractMismatch, FeatureContract
from pipeline.core.io import atomic_dir, atomic_file, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

STAGE = "features"
DEFAULT_BATCH_CLIPS = 32


# ---- the stage --------------------------------------------------------------------------------


def read_clips_jsonl(dataset_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The dataset's clip list and manifest; errors name the file and line."""
    man_path, clips_path = dataset_dir / "manifest.json", dataset_dir / "clips.jsonl"
    fix = "build the dataset first (make dataset)"
    for p in (man_path, clips_path):
        if not p.is_file():
            raise FeatureError(f"{p}: not found; {fix}")
    try:
        manifest = json.loads(man_path.read_text(encoding="utf-8"))
        classes = manifest["classes"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FeatureError(f"{man_path}: no 'classes' list ({e}); {fix}") from None
    if not isinstance(classes, list) or len(classes) < 2:
        raise FeatureError(f"{man_path}: 'classes' must list at least 2 classes, got {classes!r}; {fix}")
    clips = []
    with clips_path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                c = json.loads(line)
                path, cls_name = c["path"], c["class"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise FeatureError(f"{clips_path}:{lineno}: not a clip record with 'path' and 'class' ({e}); {fix}") from None
            if cls_name not in classes:
                raise FeatureError(f"{clips_path}:{lineno}: class {cls_name!r} is not in the manifest's classes {classes}; {fix}")
            clips.append({"path": path, "class": cls_name})
    if not clips:
        raise FeatureError(f"{clips_path}: no clips; {fix}")
    return clips, manifest


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def extract_dataset(dataset_dir: Path, clips: Sequence[dict[str, Any]], contract: FeatureContract, out: np.ndarray,
                    batch_clips: int = DEFAULT_BATCH_CLIPS, workers: int = 2, progress: bool = True) -> None:
    """Fill ``out`` (N, 1, frames, mels) with the features of ``clips``.

    Each task reads one small batch and extracts it into its own slice of ``out``; ``workers`` threads run
    tasks side by side (torch and file reads release the GIL). Small batches keep the spectrogram in cache,
    which measured faster than large batches with torch's intra-op threads.
    """
    from tqdm import tqdm

    def one_batch(span: tuple[int, int]) -> int:
        a, b = span
        audio = np.empty((b - a, contract.clip_samples), np.float32)
        for j in range(a, b):
            read_clip(dataset_dir / clips[j]["path"], contract, out=audio[j - a])
        out[a:b] = logmel(audio, contract)
        return b - a

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(clips), unit="clip", desc="features", disable=not progress, mininterval=1.0) as bar:
        for n in pool.map(one_batch, _batches(len(clips), batch_clips)):
            bar.update(n)


def run_stage(args: Any, contract: FeatureContract) -> dict[str, Any]:
    from pipeline.core.provenance import manifest as provenance_manifest

    if args.val_fraction + args.test_fraction >= 1.0:
        raise FeatureError(f"{args.params or 'flags'}: val_fraction {args.val_fraction} + test_fraction "
                           f"{args.test_fraction} leaves no training clips; make their sum < 1")
    dataset_dir: Path = args.dataset
    clips, ds_manifest = read_clips_jsonl(dataset_dir)
    classes: list[str] = list(ds_manifest["classes"])
    rows = [
        {"i": i, "path": c["path"], "class": c["class"], "label": classes.index(c["class"]),
         "split": split_of(c["path"], args.val_fraction, args.test_fraction)}
        for i, c in enumerate(clips)
    ]
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    per_class = {c: {s: sum(r["class"] == c and r["split"] == s for r in rows) for s in SPLITS} for c in classes}
    for c, n in per_class.items():
        empty = [s for s in SPLITS if n[s] == 0 and (s == "train" or getattr(args, f"{s}_fraction") > 0)]
        if empty:
            log.warning("class %s has no clips in split(s) %s (%d clips in all); generate more clips per class",
                        c, ", ".join(empty), sum(n.values()))
    inputs = [dataset_dir / "clips.jsonl", dataset_dir / "manifest.json"] + ([args.params] if args.params else [])
    with atomic_dir(args.out) as tmp:
        x = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32,
                                      shape=(len(clips), *contract.input_shape[1:]))
        extract_dataset(dataset_dir, clips, contract, x, batch_clips=args.batch_clips, workers=args.workers,
                        progress=not args.no_progress)
        x.flush()
        del x
        atomic_write_text(tmp / "index.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        man = provenance_manifest(
            STAGE, inputs=inputs,
            params={**contract.as_dict(), "val_fraction": args.val_fraction, "test_fraction": args.test_fraction},
            extra={
                "contract": contract.as_dict(),
                "classes": classes,
                "background_class": ds_manifest.get("background_class"),
                "n_clips": len(rows),
                "shape": [len(rows), *contract.input_shape[1:]],
                "dtype": "float32",
                "split_counts": counts,
                "class_split_counts": per_class,
                "dataset_dir": str(dataset_dir),
            },
        )
        atomic_write_json(tmp / "manifest.json", man)
    return man


def single_file(args: Any, contract: FeatureContract) -> None:
    from pipeline.audio.wav import AudioError, load_audio

    try:
        audio = load_audio(args.wav, sample_rate=contract.sample_rate)
    except AudioError as e:
        raise FeatureError(str(e)) from None
    window, start = loudest_window(audio, contract.clip_samples)
    sr = contract.sample_rate
    if start >= 0 and audio.size > contract.clip_samples:
        how = f"loudest {contract.clip_samples / sr:.3f} s window, {start / sr:.3f}-{(start + contract.clip_samples) / sr:.3f} s of {audio.size / sr:.3f} s"
    elif audio.size < contract.clip_samples:
        how = f"{audio.size / sr:.3f} s zero-padded to {contract.clip_samples / sr:.3f} s ({-start} samples on the left)"
    else:
        how = "whole file"
    feats = logmel(window, contract)
    print(f"{args.wav}: {how}")
    print(f"shape {tuple(feats.shape)} float32  min {feats.min():.4f}  max {feats.max():.4f}  "
          f"mean {feats.mean():.4f}  std {feats.std():.4f}")
    if args.out is not None:
        with atomic_file(args.out, "wb") as f:
            np.save(f, feats)
        print(f"wrote {args.out}")
    if args.plot is not None:
        plot_features(feats[0, 0], args.plot, title=f"{Path(args.wav).name}: {how}", contract=contract)
        print(f"wrote {args.plot}")


def plot_features(feats_tm: np.ndarray, path: Path, title: str, contract: FeatureContract) -> None:
    """Spectrogram PNG of one (n_frames, n_mels) feature matrix: time across, mel band up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    seconds = contract.n_frames * contract.hop_length / contract.sample_rate
    im = ax.imshow(feats_tm.T, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, contract.n_mels))
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"mel band (HTK, {contract.f_min_hz:g}-{contract.f_max_hz:g} Hz)")
    ax.set_title(title, fontsize=9)
    sign = "-" if contract.norm_mean_db >= 0 else "+"
    fig.colorbar(im, ax=ax, label=f"(dB {sign} {abs(contract.norm_mean_db):g}) / {contract.norm_std_db:g}")
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser(__doc__.split("\n\n")[0], STAGE)
    parser.add_argument("wav", nargs="?", type=Path, help="single-file mode: a WAV to show (any rate/channels)")
    parser.add_argument("--dataset", type=Path, help="dataset folder (clips.jsonl, manifest.json, the WAVs)")
    parser.add_argument("--out", type=Path, help="features folder to write; in single-file mode a .npy file")
    parser.add_argument("--plot", type=Path, help="single-file mode: write a spectrogram PNG here")
    parser.add_argument("--batch-clips", type=int, default=DEFAULT_BATCH_CLIPS, help="clips per extraction batch")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="extraction threads (each runs torch single-threaded)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parse_stage_args(parser, argv, STAGE)
    setup_logging(args.verbose)
    try:
        contract = FeatureContract.from_mapping({k: getattr(args, k) for k in CONTRACT_KEYS})
    except ContractMismatch as e:
        raise FeatureError(f"{args.params or 'flags'}: {e}") from None
    if args.wav is not None:
        if args.dataset is not None:
            raise FeatureError(f"{args.wav}: give either a WAV (single-file mode) or --dataset, not both")
        single_file(args, contract)
        return 0
    if args.dataset is None or args.out is None:
        parser.error("--dataset and --out are required (or give one WAV for single-file mode)")
    if args.plot is not None:
        parser.error("--plot is for single-file mode only")
    import torch

    torch.set_num_threads(1)  # parallelism comes from --workers threads; nested intra-op threads only contend
    man = run_stage(args, contract)
    print(f"wrote {args.out}: {man['n_clips']} clips, shape {tuple(man['shape'])}, splits {man['split_counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
