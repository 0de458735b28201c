"""Stage 3, train: the embedding family's head on cached embeddings, or the seed's CRNN on the log-Mel features.

Inputs: a features folder (``features.npy`` + ``index.jsonl`` + ``manifest.json``, see docs/design.md).
Trains on ``split == "train"``, early-stops on the val loss and keeps the best-val-loss weights, then
measures ``split == "test"``. Outputs in ``--out``: ``train_log.csv``, ``metrics.json``, ``confusion.txt``,
``confusion.png`` and, written last (the make target), ``ckpt.pt``
(``state_dict, model_config, classes, contract, params, provenance, best_epoch``).

The embedding family trains ``head_ensemble`` heads from seeds ``seed``, ``seed + 1``, … and saves them as one head
whose logits are the mean of theirs (``pipeline.model.embedding.mean_of_heads``): single heads differ a lot from
seed to seed on voices they have not heard, their mean much less. With ``head_centre`` each head trains on the
window's embeddings minus their mean over the window (what a whole window shares: the speaker, the microphone, the
room), and the centring is folded into its first layer: the saved head is a plain one.

Deterministic: the same seed, data and thread count give the same weights (torch.manual_seed,
deterministic algorithms, batch order from ``np.random.Generator((seed, epoch))``).

Example::

    python -m pipeline.stages.train --features build/features --out build/model
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import io
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from pipeline.core.provenance import manifest, resources
from pipeline.model.runtime import configure_torch, prefer_passive_openmp

log = logging.getLogger(__name__)

STAGE = "train"
CKPT_NAME = "ckpt.pt"
EVAL_BATCH = 256
OPTIMISTIC_NOTE = (
    "OPTIMISTIC: the test split holds augmentations of the same seed recordings the model was trained on "
    "(split by clip, not by speaker or recording), so this accuracy overstates performance on new voices "
    "and rooms. Measure on recordings that were never seeds for a real figure."
)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    early_stop: bool
    patience: int
    min_delta: float
    seed: int
    spec: SpecAugment = field(default_factory=lambda: SpecAugment(0.0, 0, 0, 0, 0))
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": the training forward pass under bfloat16 autocast


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment (Park et al. 2019) on training batches: with probability ``p`` per clip, up to
    ``time_masks`` spans of 0..``time_width`` frames and ``freq_masks`` bands of 0..``freq_width`` mel
    bins are set to the clip's mean feature value. Val/test features are never masked."""

    p: float
    time_masks: int
    time_width: int
    freq_masks: int
    freq_width: int

    @property
    def active(self) -> bool:
        return self.p > 0 and ((self.time_masks > 0 and self.time_width > 0)
                               or (self.freq_masks > 0 and self.freq_width > 0))

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Masked copy of a batch ``(b, 1, frames, mels)``; the input is not modified."""
        y = np.array(x, dtype=np.float32, copy=True)
        b, _, n_t, n_f = y.shape
        fire = rng.random(b) < self.p
        fill = y.mean(axis=(1, 2, 3))
        t_idx, f_idx = np.arange(n_t), np.arange(n_f)
        for axis, count, width, idx in ((2, self.time_masks, self.time_width, t_idx),
                                        (3, self.freq_masks, self.freq_width, f_idx)):
            size = idx.size
            w = rng.integers(0, min(width, size) + 1, size=(b, count))
            start = rng.integers(0, size, size=(b, count)) % np.maximum(size - w + 1, 1)
            hit = ((idx[None, None, :] >= start[..., None]) & (idx[None, None, :] < (start + w)[..., None])).any(1)
            hit &= fire[:, None]
            shape = (b, 1, size, 1) if axis == 2 else (b, 1, 1, size)
            y = np.where(hit.reshape(shape), fill[:, None, None, None], y)
        return y.astype(np.float32)


@dataclass
class TrainResult:
    state_dict: dict[str, Any]
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]


# ---- data ---------------------------------------------------------------------------------------


def load_split(fs: Any, split: str) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """The rows of one split as an in-memory float32 array ``(n, 1, T, F)`` and int64 labels."""
    rows = fs.rows_in(split)
    idx = np.array([int(r["i"]) for r in rows], dtype=np.int64)
    order = np.argsort(idx, kind="stable")  # sorted reads from the memmap are sequential
    idx, rows = idx[order], [rows[k] for k in order]
    x = np.ascontiguousarray(fs.x[idx], dtype=np.float32) if idx.size else np.zeros((0, *fs.x.shape[1:]), np.float32)
    y = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    return x, y, rows


def check_labels(fs: Any, index_path: Path) -> None:
    n = len(fs.classes)
    for r in fs.rows:
        label, name = int(r["label"]), r["class"]
        if not 0 <= label < n or fs.classes[label] != name:
            die(f"{index_path}: row i={r['i']} has label {label} / class {name!r}, but the classes are {fs.classes}; "
                "rebuild the features (make features)")


# ---- training -----------------------------------------------------------------------------------


def batch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order of one epoch: a Generator made from (seed, epoch), nothing global."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH,
             label_smoothing: float = 0.0) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and logits ``(n, n_classes)`` in eval mode."""
    import torch
    import torch.nn.functional as F

    model.eval()
    device = next(model.parameters()).device
    n = len(y)
    logits = np.zeros((n, model.config.n_classes), dtype=np.float32)
    total = 0.0
    with torch.no_grad():
        for s in range(0, n, batch_size):
            xb = torch.from_numpy(x[s:s + batch_size]).to(device)
            yb = torch.from_numpy(y[s:s + batch_size]).to(device)
            out = model(xb)
            total += float(F.cross_entropy(out, yb, reduction="sum", label_smoothing=label_smoothing))
            logits[s:s + batch_size] = out.cpu().numpy()
    if n == 0:
        return math.nan, math.nan, logits
    return total / n, float(np.mean(logits.argmax(1) == y)), logits


def train_model(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    settings: TrainSettings,
    progress: bool = False,
) -> TrainResult:
    """Adam + cross-entropy; keeps the weights of the epoch with the lowest val loss."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    # NHWC is the oneDNN convolution's native layout: fewer reorders, about 20% faster steps on CPU.
    layout = torch.channels_last if x_train.ndim == 4 else torch.contiguous_format
    model.to(device=settings.device, memory_format=layout)
    opt = (torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
           if settings.weight_decay else torch.optim.Adam(model.parameters(), lr=settings.lr))
    history: list[dict[str, Any]] = []
    best_state = copy.deepcopy(model.state_dict())
    best_val, best_epoch, bad_epochs, stopped = math.inf, 0, 0, False
    n = len(y_train)
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = batch_order(n, settings.seed, epoch)
        loss_sum, correct = 0.0, 0
        starts = range(0, n, settings.batch_size)
        for s in tqdm(starts, desc=f"epoch {epoch}/{settings.epochs}", unit="batch", leave=False,
                      disable=not progress):
            sel = np.sort(order[s:s + settings.batch_size])  # sorted: contiguous-ish gathers, same batch set
            xs = x_train[sel]
            if settings.spec.active:  # a generator per (seed, epoch, batch): reproducible, nothing global
                xs = settings.spec.apply(xs, np.random.default_rng([settings.seed, epoch, s]))
            xb = torch.from_numpy(xs).to(settings.device).contiguous(memory_format=layout)
            yb = torch.from_numpy(y_train[sel]).to(settings.device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(settings.device).type, dtype=torch.bfloat16,
                                enabled=settings.precision == "bf16"):
                out = model(xb)
            loss = F.cross_entropy(out.float(), yb, label_smoothing=settings.label_smoothing)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(sel)
            correct += int((out.argmax(1) == yb).sum())
        # early stopping watches the training objective: plain cross-entropy rewards the over-confidence that
        # label smoothing removes (it stopped the default preset at epoch 2 of a smoothed run)
        val_loss, val_acc, _ = evaluate(model, x_val, y_val, label_smoothing=settings.label_smoothing)
        if not (math.isfinite(loss_sum) and math.isfinite(val_loss)):
            die(f"training diverged in epoch {epoch} (train loss sum {loss_sum}, val loss {val_loss}); "
                f"lower --lr (now {settings.lr:g})")
        improved = val_loss < best_val - settings.min_delta
        if improved:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - t0,
            "improved": improved,
        }
        history.append(row)
        log.info("epoch %d/%d: loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s%s",
                 epoch, settings.epochs, row["train_loss"], row["train_acc"], val_loss, val_acc, row["seconds"],
                 " (best)" if improved else f" (no improvement for {bad_epochs})")
        if settings.early_stop and bad_epochs >= settings.patience:
            log.info("early stop after epoch %d: val loss has not improved by %g for %d epochs (best epoch %d)",
                     epoch, settings.min_delta, settings.patience, best_epoch)
            stopped = True
            break
    model.load_state_dict(best_state)
    model.to(device="cpu", memory_format=torch.contiguous_format)  # saved, exported and evaluated from the CPU
    best_state = {k: v.cpu().contiguous() for k, v in best_state.items()}
    return TrainResult(best_state, best_epoch, best_val, len(history), stopped, history)


# ---- metrics ------------------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diag(cm).astype(np.float64)
    pred_n, true_n = cm.sum(0), cm.sum(1)
    per_class = {}
    for k, name in enumerate(classes):
        p = tp[k] / pred_n[k] if pred_n[k] else 0.0
        r = tp[k] / true_n[k] if true_n[k] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per_class[name] = {"precision": float(p), "recall": float(r), "f1": float(f1), "support": int(true_n[k])}
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else math.nan,
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def confusion_text(cm: np.ndarray, classes: Sequence[str]) -> str:
    width = max(6, *(len(c) for c in classes)) + 1
    lines = ["rows: true class, columns: predicted class", " " * width + "".join(f"{c:>{width}}" for c in classes)]
    for name, row in zip(classes, cm):
        lines.append(f"{name:<{width}}" + "".join(f"{int(v):>{width}}" for v in row))
    return "\n".join(lines) + "\n"


def confusion_png(cm: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 1.0 + 0.7 * n), dpi=100)
    try:
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
        peak = cm.max() if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if peak and cm[i, j] > peak / 2 else "black")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buf.getvalue()


def history_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "improved"]
    if any("member" in row for row in history):   # an ensemble: each head's epochs, head by head
        fields = ["member", *fields]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in fields})
    return buf.getvalue()


# ---- the stage ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser(__doc__.splitlines()[0], STAGE)
    p.add_argument("--features", type=Path, required=True, help="features folder (features.npy, index.jsonl, manifest.json)")
    p.add_argument("--embeddings", type=Path,
                   help="embeddings folder of those features (pipeline.stages.embeddings); family 'embedding' only")
    p.add_argument("--out", type=Path, required=True, help="output folder (ckpt.pt, metrics.json, train_log.csv, confusion.*)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (results are reproducible for a fixed count)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="per-batch progress bar (default: when stderr is a terminal)")
    return p


def build_model(args: argparse.Namespace, n_classes: int, contract: Any) -> tuple[Any, Any, Any]:
    """(whole model, the part that is trained, its config) of the family in ``args``."""
    if args.family == "crnn":
        from pipeline.model.crnn import CRNN, ModelConfig

        config = ModelConfig(n_classes=n_classes, n_mels=contract.n_mels, n_frames=contract.n_frames,
                             rnn=args.rnn, rnn_hidden=args.rnn_hidden)
        model = CRNN(config)
        return model, model, config
    from pipeline.model.embedding import EmbeddingConfig, EmbeddingError, EmbeddingKWS

    try:
        config = EmbeddingConfig(n_classes=n_classes, n_mels=contract.n_mels, n_frames=contract.n_frames,
                                 head_hidden=args.head_hidden, head_layers=args.head_layers,
                                 head_dropout=args.head_dropout, input_mean_db=contract.norm_mean_db,
                                 input_std_db=contract.norm_std_db)
        model = EmbeddingKWS(config)
    except (ValueError, EmbeddingError) as e:
        die(f"{args.features}: {e}")
    return model, model.head, config


def fit(args: argparse.Namespace, data: tuple[np.ndarray, ...], settings: TrainSettings, progress: bool,
        n_classes: int, contract: Any) -> tuple[Any, TrainResult]:
    """Build and train the model from ``args.seed`` and, for an embedding-family ensemble, ``head_ensemble - 1``
    more heads from seeds ``seed + 1``, …; (the trained module, its result). An ensemble comes back as one head
    (:func:`pipeline.model.embedding.mean_of_heads`) with the members' histories one after the other."""
    import torch

    x_tr, y_tr, x_va, y_va = data
    members = []
    for k in range(args.head_ensemble if args.family == "embedding" else 1):
        torch.manual_seed(args.seed + k)
        model, trained, config = build_model(args, n_classes, contract)
        if k == 0:
            log.info("%s %s: %d parameters (%d trained); %d threads", args.family, config.as_dict(),
                     sum(p.numel() for p in model.parameters()), sum(p.numel() for p in trained.parameters()),
                     args.threads)
        else:
            log.info("ensemble: head %d of %d (seed %d)", k + 1, args.head_ensemble, args.seed + k)
        member_settings = dataclasses.replace(settings, seed=args.seed + k)
        if args.family == "embedding" and args.head_centre:
            trained, result = centred_training(trained, x_tr, y_tr, x_va, y_va, member_settings, progress)
        else:
            result = train_model(trained, x_tr, y_tr, x_va, y_va, member_settings, progress=progress)
        members.append((trained, result))
    if len(members) == 1:
        return members[0]
    from pipeline.model.embedding import mean_of_heads

    merged = mean_of_heads([h for h, _ in members])
    val_loss = evaluate(merged, x_va, y_va, label_smoothing=settings.label_smoothing)[0]
    history = [{**row, "member": k} for k, (_, r) in enumerate(members, 1) for row in r.history]
    log.info("ensemble of %d heads: val loss %.4f (members %s)", len(members), val_loss,
             ", ".join(f"{r.best_val_loss:.4f}" for _, r in members))
    return merged, TrainResult(merged.state_dict(), members[0][1].best_epoch, val_loss,
                               sum(r.epochs_run for _, r in members), all(r.stopped_early for _, r in members), history)


def centred_training(head: Any, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
                     settings: TrainSettings, progress: bool) -> tuple[Any, TrainResult]:
    """Train ``head`` on each window's embeddings minus their mean over the window, and fold the centring into its
    first layer: (a plain head, its result with the folded weights)."""
    from pipeline.model.embedding import TimeCentred, fold_time_centring

    centred = TimeCentred(head)
    result = train_model(centred, x_tr, y_tr, x_va, y_va, settings, progress=progress)
    folded = fold_time_centring(centred)
    return folded, dataclasses.replace(result, state_dict=folded.state_dict())


def training_device(choice: str) -> str:
    """``auto``: CUDA when torch sees a GPU, else the CPU; ``cuda`` without one is an error that says so."""
    import torch

    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        die("device cuda: torch sees no CUDA GPU here (a CPU-only torch, no driver, or a container started without "
            "--gpus all: DOCKER_RUN_FLAGS=\"--gpus all\"); use device auto or cpu")
    device = "cuda" if choice == "cuda" or (choice == "auto" and has_cuda) else "cpu"
    log.info("training on %s%s", device, f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "")
    return device


def native_bf16(device: str) -> bool:
    """Whether the hardware computes bfloat16 itself: a CUDA GPU that supports it, or a CPU with the AVX-512 BF16
    or AMX instructions (elsewhere autocast emulates bf16 and runs slower than fp32)."""
    import torch

    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def training_precision(choice: str, device: str) -> str:
    """``auto``: bf16 where the hardware has it natively, else fp32; ``bf16`` is honoured anywhere."""
    precision = choice if choice != "auto" else ("bf16" if native_bf16(device) else "fp32")
    log.info("training forward pass in %s%s", precision, " (autocast; float32 weights)" if precision == "bf16" else "")
    return precision


def _validate(args: argparse.Namespace) -> None:
    if args.threads < 1:
        die(f"--threads {args.threads}: must be >= 1")
    if args.family == "embedding" and args.spec_augment_p > 0:
        die(f"{args.params or 'command line'}: spec_augment_p {args.spec_augment_p}: SpecAugment masks features, the "
            "embedding family trains on cached embeddings; set it to 0 (MODEL=crnn uses it)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_stage_args(build_parser(), argv, STAGE)
    setup_logging(args.verbose)
    _validate(args)
    prefer_passive_openmp()

    import torch

    from pipeline.audio.features import FeatureSet

    fs = FeatureSet.open(args.features)
    index_path = args.features / "index.jsonl"
    check_labels(fs, index_path)
    classes, contract = list(fs.classes), fs.contract
    if len(classes) < 2:
        die(f"{args.features / 'manifest.json'}: {len(classes)} class(es) {classes}; need at least 2 (rebuild the dataset)")
    if (args.family == "embedding") != (args.embeddings is not None):
        die(f"--family {args.family}: {'give' if args.family == 'embedding' else 'do not give'} --embeddings "
            "(the embedding family trains its head on the cached embeddings; make all does this)")
    inputs = fs
    if args.embeddings is not None:
        from pipeline.stages.embeddings import EmbeddingSet

        inputs = dataclasses.replace(fs, x=EmbeddingSet.open(args.embeddings, fs).x)

    x_tr, y_tr, _ = load_split(inputs, "train")
    x_va, y_va, _ = load_split(inputs, "val")
    x_te, y_te, _ = load_split(inputs, "test")
    for name, y in (("train", y_tr), ("val", y_va), ("test", y_te)):
        if len(y) == 0:
            die(f"{index_path}: no rows in split {name!r} ({len(fs)} rows in all); "
                "make a bigger dataset (per_class) or adjust val_fraction/test_fraction ([features])")
    missing = [classes[k] for k in range(len(classes)) if not np.any(y_tr == k)]
    if missing:
        die(f"{index_path}: classes {missing} have no train rows; make a bigger dataset (per_class)")
    log.info("%s %s: %d classes %s; train %d, val %d, test %d clips", "embeddings" if args.embeddings else "features",
             args.embeddings or args.features, len(classes), classes, len(y_tr), len(y_va), len(y_te))

    configure_torch(args.threads)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, early_stop=args.early_stop,
                             patience=args.patience, min_delta=args.min_delta, seed=args.seed,
                             spec=SpecAugment(args.spec_augment_p, args.spec_time_masks, args.spec_time_width,
                                              args.spec_freq_masks, args.spec_freq_width),
                             label_smoothing=args.label_smoothing, weight_decay=args.weight_decay,
                             device=(device := training_device(args.device)),
                             precision=training_precision(args.precision, device))
    progress = args.progress if args.progress is not None else os.isatty(2)
    t0 = time.perf_counter()
    trained, result = fit(args, (x_tr, y_tr, x_va, y_va), settings, progress, len(classes), contract)
    train_seconds = time.perf_counter() - t0
    config = trained.config   # an ensemble's merged head is wider than each member

    test_loss, _, test_logits = evaluate(trained, x_te, y_te)
    metrics = classification_metrics(y_te, test_logits.argmax(1), classes)
    cm = np.array(metrics["confusion_matrix"], dtype=np.int64)
    log.info("best epoch %d (val loss %.4f); test accuracy %.4f on %d clips (OPTIMISTIC: same seed recordings)",
             result.best_epoch, result.best_val_loss, metrics["accuracy"], metrics["n"])

    hyper = dict(args.params_used)
    feature_inputs = [fs.root / "manifest.json", index_path] + ([args.embeddings / "manifest.json"] if args.embeddings else [])
    prov = manifest(STAGE, inputs=feature_inputs, params=hyper, extra={"threads": args.threads})
    metrics_doc = {
        "note": OPTIMISTIC_NOTE,
        "split": "test",
        "test_accuracy": metrics["accuracy"],
        "test_loss": test_loss,
        "macro_f1": metrics["macro_f1"],
        "n_test": metrics["n"],
        "classes": classes,
        "per_class": metrics["per_class"],
        "confusion_matrix": metrics["confusion_matrix"],
        "confusion_axes": "rows: true class, columns: predicted class",
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_seconds": train_seconds,
        "device": settings.device,
        "precision": settings.precision,
        "counts": {"train": len(y_tr), "val": len(y_va), "test": len(y_te)},
        "params": hyper,
        "model_config": config.as_dict(),
        "resources": resources(),
    }

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # The old target goes first so an interrupted run never leaves a ckpt.pt next to newer side files.
    (out / CKPT_NAME).unlink(missing_ok=True)
    atomic_write_text(out / "train_log.csv", history_csv(result.history))
    atomic_write_json(out / "metrics.json", metrics_doc)
    atomic_write_text(out / "confusion.txt",
                      confusion_text(cm, classes) + f"\naccuracy {metrics['accuracy']:.4f} on {metrics['n']} test clips\n"
                      + OPTIMISTIC_NOTE + "\n")
    atomic_write_bytes(out / "confusion.png", confusion_png(
        cm, classes, f"test accuracy {metrics['accuracy']:.3f} (optimistic: same seed recordings)"))
    ckpt = {
        "family": args.family,
        "state_dict": result.state_dict,  # embedding family: the head's (the frozen embedding comes from its package)
        "model_config": config.as_dict(),
        "classes": classes,
        "contract": contract.as_dict(),
        "params": hyper,
        "provenance": prov,
        "best_epoch": result.best_epoch,
        "metrics": {"test_accuracy": metrics["accuracy"], "best_val_loss": result.best_val_loss},
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(out / CKPT_NAME, buf.getvalue())
    print(f"wrote {out / CKPT_NAME} (best epoch {result.best_epoch}, test accuracy {metrics['accuracy']:.4f}, "
          "optimistic: test clips are augmentations of the training seeds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
