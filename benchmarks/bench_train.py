"""Benchmark: training throughput, same data, same run, same threads.

Three measurements on one set of tensors (a built features folder, or random tensors of the right shapes):

  predecessor loop   the seed's CRNN trained as the predecessor's ``train.py`` did: a ``DataLoader`` over a
                     ``TensorDataset`` (batch 64, shuffled), NCHW tensors, ``loss.item()`` and accuracy per batch,
                     validation in ``torch.no_grad``. Reimplemented from its description (docs/predecessor.md);
                     the original source is not in this repository.
  ours, CRNN         ``pipeline.stages.train.train_model`` (``make all MODEL=crnn``): the same CRNN and batch size,
                     channels-last, numpy batch gathers, no DataLoader; in fp32, and with the precision
                     ``make all`` picks on this machine (``precision = "auto"``: bfloat16 autocast where the CPU
                     computes bf16 natively).
  ours, head         the default family: the head trained on cached speech embeddings (``make embeddings``), at
                     its default batch size; the cost of computing the embeddings once is measured as well.

Prints samples/s per epoch (validation included) and the ratios. Targets: ours ≥ 1.5× the predecessor's loop
for the CRNN. A timing, not a test: it never fails on a number.

    python benchmarks/bench_train.py                                  # 4,096 random clips of each shape
    python benchmarks/bench_train.py --features build-crnn/features   # a CRNN features folder (98 x 64)
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.model.crnn import CRNN, ModelConfig  # noqa: E402
from pipeline.model.embedding import EmbeddingConfig, Head, n_windows  # noqa: E402
from pipeline.stages.embeddings import embed  # noqa: E402
from pipeline.stages.train import SpecAugment, TrainSettings, train_model, training_precision  # noqa: E402

N_CLASSES = 8


def predecessor_loop(model, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, epochs: int,
                     batch_size: int) -> float:
    """Seconds for ``epochs`` epochs of the predecessor's style of loop."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    train = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)), batch_size=batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        total, correct, seen = 0.0, 0, 0
        for xb, yb in train:
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
        model.eval()
        with torch.no_grad():
            for xb, yb in val:
                loss_fn(model(xb), yb).item()
    return time.perf_counter() - t0


def ours(model, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, epochs: int, batch_size: int,
         precision: str = "fp32") -> float:
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=1e-3, early_stop=False, patience=epochs,
                             min_delta=0.0, seed=1, spec=SpecAugment(0.0, 0, 0, 0, 0), precision=precision)
    t0 = time.perf_counter()
    train_model(model, x, y, xv, yv, settings)
    return time.perf_counter() - t0


def load(features: Path | None, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if features is None:
        return rng.standard_normal((n, 1, 98, 64), dtype=np.float32), rng.integers(0, N_CLASSES, n).astype(np.int64)
    from pipeline.audio.features import FeatureSet

    fs = FeatureSet.open(features)
    if tuple(fs.x.shape[2:]) != (98, 64):
        sys.exit(f"{features}: features of shape {tuple(fs.x.shape[2:])}; the CRNN comparison needs the CRNN's "
                 "98 x 64 (build them with make features MODEL=crnn)")
    take = rng.permutation(len(fs.x))[:n]
    return np.ascontiguousarray(fs.x[np.sort(take)], dtype=np.float32), np.asarray(fs.y)[np.sort(take)].astype(np.int64)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=Path, help="a CRNN features folder (default: random tensors)")
    p.add_argument("--clips", type=int, default=4096, help="training clips (a quarter as many again for validation)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per measurement")
    p.add_argument("--batch-size", type=int, default=64, help="the CRNN's batch size, both loops (the predecessor's 64)")
    p.add_argument("--head-batch-size", type=int, default=256, help="the head's batch size (its default)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, every measurement")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n_val = args.clips // 4
    x_all, y_all = load(args.features, args.clips + n_val, rng)
    x, y, xv, yv = x_all[:args.clips], y_all[:args.clips], x_all[args.clips:], y_all[args.clips:]
    samples = len(y) * args.epochs

    def crnn():
        torch.manual_seed(0)
        return CRNN(ModelConfig(n_classes=N_CLASSES))

    default_precision = training_precision("auto", "cpu")  # what make all MODEL=crnn uses on this machine
    t_pred = predecessor_loop(crnn(), x, y, xv, yv, args.epochs, args.batch_size)
    t_fp32 = ours(crnn(), x, y, xv, yv, args.epochs, args.batch_size, "fp32")
    t_ours = ours(crnn(), x, y, xv, yv, args.epochs, args.batch_size, default_precision) \
        if default_precision != "fp32" else t_fp32

    # The head: embeddings of 2 s clips (198 frames x 32 mels), computed once, then epochs on them.
    frames = 198
    feats = rng.standard_normal((len(y_all), 1, frames, 32), dtype=np.float32)
    t0 = time.perf_counter()  # as the embeddings stage computes them (ONNX Runtime, export included)
    emb = embed(feats, types.SimpleNamespace(norm_mean_db=-30.0, norm_std_db=10.0), threads=args.threads)
    t_emb = time.perf_counter() - t0
    head = Head(EmbeddingConfig(n_classes=N_CLASSES, n_frames=frames))
    head.config = EmbeddingConfig(n_classes=N_CLASSES, n_frames=frames)
    t_head = ours(head, emb[:args.clips], y, emb[args.clips:], yv, args.epochs, args.head_batch_size)  # fp32: its default

    source = args.features or "random tensors"
    print(f"training throughput, {len(y)} training + {len(yv)} validation clips ({source}), {args.epochs} epochs, "
          f"{args.threads} threads ({datetime.date.today()}):")
    print(f"  predecessor loop, CRNN, batch {args.batch_size}      {samples / t_pred:9.0f} samples/s  ({t_pred:.1f} s)")
    print(f"  ours (train_model), CRNN, batch {args.batch_size}, fp32   {samples / t_fp32:9.0f} samples/s  "
          f"({t_fp32:.1f} s)  -> {t_pred / t_fp32:.2f}x the predecessor loop")
    print(f"  ours, CRNN, batch {args.batch_size}, precision auto = {default_precision} {samples / t_ours:9.0f} "
          f"samples/s  ({t_ours:.1f} s)  -> {t_pred / t_ours:.2f}x the predecessor loop (target 1.5x; make all "
          f"trains this way here)")
    print(f"  ours, head on cached embeddings, batch {args.head_batch_size} {samples / t_head:9.0f} samples/s  "
          f"({t_head:.2f} s)  -> {t_ours / t_head:.0f}x the CRNN per epoch")
    print(f"  computing the embeddings once ({n_windows(frames)} windows of 96 per 2 s clip): {len(feats) / t_emb:.0f} "
          f"clips/s ({t_emb:.1f} s for {len(feats)} clips); head epochs + that, vs CRNN epochs: "
          f"{(t_emb + t_head):.1f} s vs {t_ours:.1f} s for {args.epochs} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
