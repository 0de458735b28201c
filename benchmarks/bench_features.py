"""Benchmark: our feature extraction vs librosa log-Mel per clip, on the same clips in the same run.

Ours is the features stage's own path (``pipeline.stages.features.extract_dataset``: read the 16-bit WAVs, batched
torchaudio STFT + mel, ``--workers`` threads). The baseline is the field's usual loop: per clip
``soundfile.read`` + ``librosa.feature.melspectrogram`` (same contract: n_fft 512, Hann 400, hop 160,
64 HTK mels, center=False on the 56-sample padded clip) + ``power_to_db``, once in one process and once
split over ``--workers`` processes. Both sides' features are compared to show they compute the same thing.
Prints clips/s and the ratios (target: ours >= 2000 clips/s on 2 cores). Not a test: it never fails on a timing.

Needs the benchmark-only packages: ``pip install -r benchmarks/requirements.txt``.

Example::

    python benchmarks/bench_features.py --clips 3000            # synthetic 1 s clips in a temp folder
    python benchmarks/bench_features.py --dataset build/dataset  # the clips of a built dataset
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# One BLAS/OpenMP thread per process on both sides: parallelism is explicit (--workers), and spinning BLAS
# threads on a busy 2-core machine made the librosa loop several times slower than it needs to be.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.audio.features import load_contract, pad_samples
from pipeline.core.contract import FeatureContract
from pipeline.stages.features import extract_dataset


def synth_dataset(root: Path, n_clips: int, seed: int = 0) -> list[str]:
    """``n_clips`` 1 s 16-bit WAVs: a harmonic 'word' at a random place and pitch in noise at a random level."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    paths = []
    for k in range(n_clips):
        x = 10 ** rng.uniform(-3.5, -1.5) * rng.standard_normal(16000)
        start, f0 = int(rng.integers(0, 8000)), rng.uniform(90, 300)
        env = np.zeros(16000)
        env[start : start + 8000] = np.hanning(8000)
        x += rng.uniform(0.05, 0.5) * env * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        rel = f"C{k % 8}/c_{k:05d}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), np.clip(x, -1, 1).astype(np.float32), 16000, subtype="PCM_16")
        paths.append(rel)
    return paths


def librosa_logmel(paths: list[str], root: str, contract_dict: dict, cached_basis: bool = False) -> np.ndarray:
    """The baseline: one clip at a time, as a librosa user would write it (``feature.melspectrogram``), or
    (``cached_basis``) as a careful one would: ``librosa.stft`` with the mel filterbank built once."""
    import librosa

    c = FeatureContract(**contract_dict)
    left, right = pad_samples(c)
    out = np.empty((len(paths), 1, c.n_frames, c.n_mels), np.float32)
    basis = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.f_min_hz,
                                fmax=c.f_max_hz, htk=True, norm=None)
    for j, rel in enumerate(paths):
        y, sr = sf.read(os.path.join(root, rel), dtype="float32")
        y = np.pad(y, (left, right))
        if cached_basis:
            s = librosa.stft(y, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window="hann",
                             center=False)
            p = basis @ (s.real ** 2 + s.imag ** 2)
        else:
            p = librosa.feature.melspectrogram(
                y=y, sr=sr, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window="hann",
                center=False, power=2.0, n_mels=c.n_mels, fmin=c.f_min_hz, fmax=c.f_max_hz, htk=True, norm=None)
        db = librosa.power_to_db(p, ref=1.0, amin=c.power_floor, top_db=None)
        out[j, 0] = ((db - c.norm_mean_db) / c.norm_std_db).T
    return out


CPU_S: dict[str, float] = {}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """Wall seconds (and this process's CPU seconds, kept in CPU_S by function name) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    CPU_S[getattr(fn, "__name__", "?")] = time.process_time() - c0
    return time.perf_counter() - t0, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=3000, help="synthetic clips to make (without --dataset)")
    parser.add_argument("--dataset", type=Path, help="use this built dataset's clips.jsonl instead")
    parser.add_argument("--params", type=Path, default=ROOT / "pipeline" / "params" / "default" / "features.toml")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="threads (ours) / processes (librosa)")
    parser.add_argument("--baseline-clips", type=int, default=1000, help="clips the librosa loops process (they are slow)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    contract = load_contract(args.params)
    tmp = None
    if args.dataset is not None:
        root = args.dataset
        paths = [json.loads(line)["path"] for line in (root / "clips.jsonl").read_text().splitlines() if line.strip()]
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_features."))
        root = tmp
        print(f"making {args.clips} synthetic 1 s clips in {tmp} ...", flush=True)
        paths = synth_dataset(root, args.clips)
    try:
        clips = [{"path": p} for p in paths]
        n_base = min(args.baseline_clips, len(paths))
        # warm-up: imports, kernels, page cache for every file (both sides then read from memory)
        extract_dataset(root, clips[:64], contract, np.empty((64, 1, 98, 64), np.float32), progress=False)
        librosa_logmel(paths[:8], str(root), contract.as_dict())
        for p in paths:
            (root / p).read_bytes()

        ours = np.empty((len(paths), 1, contract.n_frames, contract.n_mels), np.float32)
        t_ours, _ = timed(extract_dataset, root, clips, contract, ours, workers=args.workers, progress=False)
        cpu_ours = CPU_S["extract_dataset"]
        t_ours1, _ = timed(extract_dataset, root, clips, contract, ours, workers=1, progress=False)
        t_lib, lib = timed(librosa_logmel, paths[:n_base], str(root), contract.as_dict())
        cpu_lib = CPU_S["librosa_logmel"]
        t_libc, libc = timed(librosa_logmel, paths[:n_base], str(root), contract.as_dict(), cached_basis=True)
        chunks = [paths[k::args.workers] for k in range(args.workers)]
        with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(librosa_logmel, [c[:2] for c in chunks], [str(root)] * args.workers,
                          [contract.as_dict()] * args.workers))  # start the workers before timing
            sub = [c[: n_base // args.workers] for c in chunks]
            t_libp, _ = timed(lambda: list(pool.map(librosa_logmel, sub, [str(root)] * args.workers,
                                                    [contract.as_dict()] * args.workers)))
        n_libp = sum(len(c) for c in sub)

        diff = max(float(np.abs(ours[:n_base] - lib).max()), float(np.abs(ours[:n_base] - libc).max()))
        r_ours, r_ours1 = len(paths) / t_ours, len(paths) / t_ours1
        r_lib, r_libp, r_libc = n_base / t_lib, n_libp / t_libp, n_base / t_libc
        print(f"clips: {len(paths)} (librosa loops: {n_base}), contract {contract.n_frames}x{contract.n_mels}, "
              f"max |ours - librosa| = {diff:.2e} (normalised units)")
        print(f"  ours, {args.workers} threads         {r_ours:8.0f} clips/s   (target >= 2000)")
        print(f"  ours, 1 thread           {r_ours1:8.0f} clips/s")
        print(f"  librosa per clip, 1 proc {r_lib:8.0f} clips/s")
        print(f"  librosa per clip, {args.workers} procs {r_libp:8.0f} clips/s")
        print(f"  librosa stft + cached mel basis, 1 proc {r_libc:6.0f} clips/s")
        print(f"CPU cost: ours {1e6 * cpu_ours / len(paths):.0f} us/clip, librosa {1e6 * cpu_lib / n_base:.0f} us/clip "
              f"({cpu_lib / n_base / (cpu_ours / len(paths)):.1f}x); on {args.workers} idle cores ours would do about "
              f"{args.workers * len(paths) / cpu_ours:.0f} clips/s")
        print(f"ratio ours/librosa: {r_ours / r_lib:.1f}x (vs 1 process), {r_ours / r_libp:.1f}x (same cores), "
              f"{r_ours / r_libc:.1f}x (vs stft + cached basis, 1 process); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
