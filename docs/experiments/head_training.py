"""Experiment (not part of the pipeline): ways of training the head, on a build's cached embeddings and streams.

Every variant shares the build's frozen embedding, so the embeddings of every window the evaluation streams are
computed once with the exported model's own front end (``pipeline.eval.detect.stream_embeddings``) and cached in
``<build>/head_training_cache/`` (by name: delete it when the build or the takes change): the development set, the
evaluation set and a folder of real takes (one folder per command, as seeds are), each command inside 1 s of quiet
as ``make eval`` streams it. Each variant trains ``--heads`` heads with the train stage's own ``fit`` (the
ensemble it ships) on ``<build>/embeddings``, chooses its detector on the development set as ``make detector``
does and is scored as ``make eval`` and ``make eval-real`` score: about 30 s a variant on 2 cores instead of a rebuild. ``shipped``
scores the build's own checkpoint, which must reproduce the build's ``make eval`` figures.

    python docs/experiments/head_training.py --build /tmp/exp/f5 --real ../shared/seeds-asrc shipped defaults ls0.1
    python docs/experiments/head_training.py --build /tmp/exp/f5 --real ../shared/seeds-asrc --first-seed 2000 defaults
    python docs/experiments/head_training.py --build /tmp/exp/f5 --real ../shared/seeds-asrc centred+neural_x3
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.audio.features import FeatureSet
from pipeline.audio.wav import load_audio
from pipeline.core.detector import Detector, DetectorSettings
from pipeline.eval.detect import in_context, stream_embeddings
from pipeline.eval.detector_calib import choose
from pipeline.eval.evaluate import best_window, det_sweep, detector_hits, holdout_layout, miss_at_fa
from pipeline.model.embedding import EmbeddingConfig, Head
from pipeline.model.infer import OnnxModel
from pipeline.model.runtime import configure_torch
from pipeline.stages.embeddings import EmbeddingSet
from pipeline.stages.train import TrainSettings, fit, load_split

BG = "FONDO"


def capture(model, layout, path):
    """Window embeddings (float16) of every file of a holdout layout: negatives as they are, commands in context."""
    if path.exists():
        z = np.load(path)
        return ([z[f"n{i}"] for i in range(int(z["n_neg"]))], [z[f"p{i}"] for i in range(len(z["labels"]))],
                [int(v) for v in z["labels"]], float(z["negative_s"]))
    sr = model.contract.sample_rate
    neg, pos, labels, negative_s = [], [], [], 0.0
    for cls, files in layout.items():
        for f in files:
            audio = load_audio(f, sr)
            if cls == BG:
                neg.append(stream_embeddings(model, audio, 0.1).astype(np.float16))
                negative_s += len(audio) / sr
            else:
                pos.append(stream_embeddings(model, in_context(audio, sr, 1.0, seed=len(pos)), 0.1).astype(np.float16))
                labels.append(model.classes.index(cls))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, n_neg=len(neg), labels=np.array(labels, dtype=np.int64), negative_s=negative_s,
             **{f"n{i}": x for i, x in enumerate(neg)}, **{f"p{i}": x for i, x in enumerate(pos)})
    return neg, pos, labels, negative_s


def probs(head, streams):
    head.eval()
    with torch.no_grad():
        return [torch.softmax(head(torch.from_numpy(e.astype(np.float32))), -1).double().numpy() for e in streams]


def assess(head, sets, classes):
    """Detector chosen on the development set; figures on the evaluation set and on the real takes."""
    neg, pos, labels, negative_s = sets["dev"]
    base = DetectorSettings(hop_s=0.1, on_threshold=1.0, off_threshold=0.5, refractory_s=1.0)
    best, _ = choose(probs(head, neg), negative_s, probs(head, pos), labels, classes, base, [1, 3, 5, 8], [1, 2, 3], 0.5)
    s = best.settings
    neg, pos, labels, negative_s = sets["eval"]
    neg_p, pos_p = probs(head, neg), probs(head, pos)
    fa = sum(len(Detector(s, classes).run(p)) for p in neg_p)
    smoothed = [Detector(s, classes).smooth(p) for p in pos_p]
    row = {"detector": f"{s.smooth_windows}/{s.min_consecutive_windows}/{s.on_threshold:.4f}", "tts_fa": fa,
           "tts_miss": round(1 - float(np.mean(detector_hits(smoothed, labels, s, classes))), 3)}
    at = miss_at_fa(det_sweep(pos_p, labels, neg_p, negative_s, s, classes), [1.0, 5.0])
    row.update({f"tts_miss@{k}": None if at[k]["miss_rate"] is None else round(at[k]["miss_rate"], 3) for k in ("1", "5")})
    _, real, real_labels, _ = sets["real"]
    real_p = probs(head, real)
    n = len(real_p)
    row["real_right"] = sum(int(np.argmax(p[best_window(p, classes.index(BG))])) == y for p, y in zip(real_p, real_labels))
    row["real_found"] = sum(detector_hits([Detector(s, classes).smooth(p) for p in real_p], real_labels, s, classes))
    at = miss_at_fa(det_sweep(real_p, real_labels, neg_p, negative_s, s, classes), [1.0, 5.0])
    row.update({f"real_found@{k}": None if at[k]["miss_rate"] is None else round(n * (1 - at[k]["miss_rate"]))
                for k in ("1", "5")})
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, required=True, help="a default build after `make all eval`")
    ap.add_argument("--real", type=Path, required=True, help="real takes, one folder per command (its FONDO unused)")
    ap.add_argument("--heads", type=int, default=5, help="heads per variant, merged as the train stage merges them")
    ap.add_argument("--first-seed", type=int, default=None, help="seed of the first head (default: the build's)")
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    b = args.build
    configure_torch(2)
    model = OnnxModel(b / "model/kws.onnx")
    classes = model.classes
    cache = b / "head_training_cache"
    real_layout = {c: fs for c, fs in holdout_layout(args.real, classes, BG).items() if c != BG}
    sets = {"dev": capture(model, holdout_layout(b / "holdout-dev", classes, BG), cache / "dev.npz"),
            "eval": capture(model, holdout_layout(b / "holdout-tts", classes, BG), cache / "eval.npz"),
            "real": capture(model, real_layout, cache / f"real-{args.real.resolve().name}.npz")}

    fs = FeatureSet.open(b / "features")
    inputs = dataclasses.replace(fs, x=EmbeddingSet.open(b / "embeddings", fs).x)
    x_tr, y_tr, rows = load_split(inputs, "train")
    x_va, y_va, _ = load_split(inputs, "val")
    kind = {}
    for line in (b / "dataset/clips.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        name = r["source"].split("/")[-1]
        kind[r["path"]] = next((k for k in ("neural", "tts", "near", "speech") if name.startswith(k)), "user")
    command = np.array([r["class"] != BG for r in rows])
    source = np.array([kind[r["path"]] for r in rows])
    every = np.arange(len(rows))

    def counted(k, times, commands_only=True):  # the (command) clips of one source counted `times` times
        of = (source == k) & (command if commands_only else True)
        return np.sort(np.concatenate([every] + [every[of]] * (times - 1)))

    def kept(k, share, commands_only=True):  # that share of one source's clips, spread evenly
        of = (source == k) & (command if commands_only else True)
        return every[~of | (every % 100 < share * 100)]

    variants = {
        "defaults": {}, "centred": {"head_centre": True}, "raw": {"head_centre": False},
        "ls0.1": {"label_smoothing": 0.1}, "ls0.2": {"label_smoothing": 0.2},
        "wd0.05": {"weight_decay": 0.05}, "ls0.1_wd0.05": {"label_smoothing": 0.1, "weight_decay": 0.05},
        "drop0.5": {"head_dropout": 0.5}, "hidden64": {"head_hidden": 64}, "hidden256": {"head_hidden": 256},
        "layers1": {"head_layers": 1},
        "neural_x2": {"rows": counted("neural", 2)}, "neural_x3": {"rows": counted("neural", 3)},
        "neural_x3_ls0.1": {"rows": counted("neural", 3), "label_smoothing": 0.1},
        "near_x2": {"rows": counted("near", 2, commands_only=False)},
        "near_x3": {"rows": counted("near", 3, commands_only=False)},
        "user_half": {"rows": kept("user", 0.5)}, "no_near": {"rows": kept("near", 0.0, commands_only=False)},
        "tts_half": {"rows": kept("tts", 0.5)}, "no_tts": {"rows": kept("tts", 0.0)},
    }
    params = json.loads((b / "params/train.json").read_text(encoding="utf-8"))["params"]
    for name in args.variants:
        if name == "shipped":
            ck = torch.load(b / "model/ckpt.pt", map_location="cpu", weights_only=False)
            head = Head(EmbeddingConfig.from_mapping(ck["model_config"]))
            head.load_state_dict(ck["state_dict"])
        else:
            over = {k: v for part in name.split("+") for k, v in variants[part].items()}  # a+b: both
            rows_used = over.pop("rows", every)
            seed = params["seed"] if args.first_seed is None else args.first_seed
            # builds from before head_centre trained on the raw embeddings
            used = {"head_centre": False, **params, **over, "seed": seed, "head_ensemble": args.heads}
            a = argparse.Namespace(**used, threads=2, features=b / "features")
            st = TrainSettings(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, early_stop=a.early_stop,
                               patience=a.patience, min_delta=a.min_delta, seed=seed,
                               label_smoothing=a.label_smoothing, weight_decay=a.weight_decay)
            head, _ = fit(a, (x_tr[rows_used], y_tr[rows_used], x_va, y_va), st, False, len(classes), fs.contract)
        row = {"variant": name, "first_seed": None if name == "shipped" else seed, **assess(head, sets, classes)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
