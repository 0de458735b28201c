"""Stage 2b (embedding family), embeddings: every clip's features through the frozen speech embedding, once.

The embedding is frozen, so each clip's embeddings never change while the head is trained and retrained:
they are computed here, once per features folder, and the train stage trains the head on them in seconds.

Inputs: a features folder made with the embedding contract (32 slaney mels, ``pipeline.model.embedding``).
Outputs in ``--out`` (replaced as a whole): ``embeddings.npy`` float32 ``(N, n_windows, 96)`` in the features'
row order, and ``manifest.json`` (written last; the make target): the embedding's sha256, the features'
manifest sha256, the shape.

    python -m pipeline.stages.embeddings --features build/features --out build/embeddings
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.features import FeatureSet
from pipeline.core.cli import StageError, die, run_main, setup_logging
from pipeline.core.io import atomic_dir, atomic_write_json, sha256_file
from pipeline.core.provenance import manifest
from pipeline.core.workers import cpu_session

log = logging.getLogger(__name__)

STAGE = "embeddings"
BATCH_CLIPS = 256


class EmbeddingSetError(StageError):
    """A missing, unfinished or mismatched embeddings folder; the message names it and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingSet:
    """An embeddings folder: ``x`` memmap ``(N, n_windows, 96)`` row for row with its features folder."""

    root: Path
    x: np.ndarray
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | os.PathLike[str], features: FeatureSet) -> EmbeddingSet:
        root = Path(root)
        fix = f"rebuild it: python -m pipeline.stages.embeddings --features {features.root} --out {root} (make embeddings)"
        try:
            man = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
            x = np.load(root / "embeddings.npy", mmap_mode="r")
        except FileNotFoundError as e:
            raise EmbeddingSetError(f"{root}: no finished embeddings folder ({e.filename} missing); {fix}") from None
        except (OSError, ValueError) as e:
            raise EmbeddingSetError(f"{root}: unreadable embeddings folder ({e}); {fix}") from None
        made_from = man.get("features_manifest_sha256")
        if made_from != sha256_file(features.root / "manifest.json"):
            raise EmbeddingSetError(f"{root}: made from other features than {features.root}; {fix}")
        if x.ndim != 3 or x.shape[0] != len(features) or x.dtype != np.float32:
            raise EmbeddingSetError(f"{root / 'embeddings.npy'}: {x.dtype} {x.shape}, expected float32 "
                                    f"({len(features)}, n_windows, 96); {fix}")
        return cls(root=root, x=x, manifest=man)


def embed(features: np.ndarray, contract: Any, threads: int = 2, batch_clips: int = BATCH_CLIPS) -> np.ndarray:
    """``(n, 1, n_frames, 32)`` features of ``contract`` -> ``(n, n_windows, 96)`` embeddings (float32).

    The frozen embedding runs in ONNX Runtime (exported once, in memory, with a dynamic batch): 3x faster
    than PyTorch's eager convolutions on 2 cores, within 3e-5 of them, and the runtime the host and the
    board emulator run the exported model with."""
    import io
    import warnings

    import torch

    from pipeline.model.embedding import SpeechEmbedding, n_windows

    net = SpeechEmbedding(contract.norm_mean_db, contract.norm_std_db).eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices; export.py logs them
        torch.onnx.export(net, (torch.zeros((1,) + tuple(features.shape[1:])),), buf, input_names=["features"],
                          output_names=["embeddings"], opset_version=13, dynamo=False,
                          dynamic_axes={"features": {0: "n"}, "embeddings": {0: "n"}})
    session = cpu_session(buf.getvalue(), threads)
    out = np.empty((len(features), n_windows(features.shape[2]), 96), np.float32)
    for s in range(0, len(features), batch_clips):
        batch = np.ascontiguousarray(features[s:s + batch_clips], dtype=np.float32)
        out[s:s + batch_clips] = session.run(["embeddings"], {"features": batch})[0]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, required=True, help="features folder (embedding contract)")
    p.add_argument("--out", type=Path, required=True, help="embeddings folder (replaced as a whole)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    from pipeline.model.embedding import EMBEDDING_SHA256, N_MELS, EmbeddingError, embedding_onnx_path

    fs = FeatureSet.open(args.features)
    if fs.contract.n_mels != N_MELS:
        die(f"{args.features}: features have {fs.contract.n_mels} mel bands, the speech embedding takes {N_MELS}; "
            "build them with the embedding contract (the defaults; MODEL=crnn does not use embeddings)")
    try:
        embedding_onnx_path()
    except EmbeddingError as e:
        die(str(e))
    x = embed(fs.x, fs.contract, threads=args.threads)
    with atomic_dir(args.out) as tmp:
        np.save(tmp / "embeddings.npy", x)
        atomic_write_json(tmp / "manifest.json", manifest(STAGE, inputs=[fs.root / "manifest.json"], extra={
            "features_manifest_sha256": sha256_file(fs.root / "manifest.json"),
            "embedding_sha256": EMBEDDING_SHA256,
            "shape": list(x.shape),
            "dtype": "float32",
        }))
    print(f"wrote {args.out}: embeddings {tuple(x.shape)} of {len(fs)} clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
