"""Benchmark: our dataset stage vs audiomentations doing the same augmentation mix on the same seeds.

Both sides, in the same run, with the same number of worker processes and clips: read the seeds,
crop 1 s around the word, tempo change (p 0.5, 0.9-1.1), pitch shift (p 0.5, +-1 semitone), time
shift (p 0.8, +-100 ms), reverb (p 0.3, synthetic room impulse responses), FONDO noise (p 0.9, SNR
0-20 dB), background clips cut from FONDO with a random gain, and write 16-bit WAVs. Prints clips/s
for both and the ratio (target: ours >= 5x). Not a test: it never fails on a timing.

Conservative for the baseline: its worker start-up and warm-up (library imports, first calls) are not
timed, while ours is timed end to end (``pipeline.dataset.main``: reading seeds, workers, manifest).
Both sides run one thread per process (OMP/OpenBLAS/MKL/NUMBA thread counts set to 1).

Needs the benchmark-only packages: ``pip install -r benchmarks/requirements.txt``.

Example::

    python benchmarks/bench_dataset.py --seeds data/demo-seeds --per-class 300 --fondo-clips 300
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import augment as A
from pipeline import dataset
from pipeline.audio import locate_word

SR = 16000
N_IRS = 64
CHUNK = 32
_B: dict[str, Any] = {}


def _baseline_init(seeds_dir: str, ir_dir: str, method: str, seed: int) -> None:
    import audiomentations as am

    np.random.seed(seed + os.getpid() % 1000)
    root = Path(seeds_dir)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    seeds: dict[str, list[tuple[np.ndarray, int]]] = {}
    for c in classes:
        group = []
        for p in sorted((root / c).glob("*.wav")):
            x, sr = sf.read(str(p), dtype="float32")
            assert sr == SR and x.ndim == 1, f"{p}: the benchmark expects 16 kHz mono seeds"
            centre = int(locate_word(x).center) if c != "FONDO" else 0
            group.append((x, centre))
        seeds[c] = group
    _B.update(
        classes=classes, seeds=seeds,
        pre=am.Compose([
            am.TimeStretch(min_rate=0.9, max_rate=1.1, leave_length_unchanged=False, method=method, p=0.5),
            am.PitchShift(min_semitones=-1.0, max_semitones=1.0, method=method, p=0.5),
            am.Shift(min_shift=-0.1, max_shift=0.1, shift_unit="seconds", rollover=False, p=0.8),
        ]),
        post=am.Compose([
            am.ApplyImpulseResponse(ir_path=ir_dir, p=0.3),
            am.AddBackgroundNoise(sounds_path=str(root / "FONDO"), min_snr_db=0.0, max_snr_db=20.0, p=0.9),
        ]),
        gain=am.Gain(min_gain_db=-12.0, max_gain_db=3.0, p=1.0),
    )
    # Warm up (first calls load libraries and files): the baseline is timed in its steady state.
    x = np.zeros(SR + 6400, dtype=np.float32)
    x[SR // 2] = 0.5
    for _ in range(3):
        _B["post"](_B["pre"](x, SR)[:SR], SR)


def _started(_: int) -> int:
    time.sleep(0.2)  # keep this worker busy so the next task starts (and initialises) another one
    return os.getpid()


def _baseline_chunk(task: tuple[str, int, int, str]) -> tuple[int, float]:
    """Make clips [start, stop) of one class; returns (clips, CPU seconds this took in the worker)."""
    cpu0 = time.process_time()
    cls, start, stop, out = task
    group = _B["seeds"][cls]
    for i in range(start, stop):
        x, centre = group[i % len(group)]
        if cls == "FONDO":
            off = np.random.randint(0, max(1, x.size - SR))
            y = _B["gain"](x[off: off + SR], SR)
        else:
            half = SR // 2 + 3200  # 1 s window + 200 ms margin each side for the shift / tempo change
            seg = np.pad(x, (half, half))[centre: centre + 2 * half]
            seg = _B["pre"](seg, SR)
            c0 = seg.size // 2 - SR // 2
            y = A.fit_length(seg[c0: c0 + SR], SR)
            y = _B["post"](y, SR)
        y = np.clip(y, -1.0, 1.0)
        sf.write(f"{out}/{cls}/{cls.lower()}_{i:05d}.wav", y, SR, subtype="PCM_16")
    return stop - start, time.process_time() - cpu0


def run_baseline(seeds: Path, out: Path, counts: dict[str, int], workers: int, method: str,
                 ir_dir: Path) -> tuple[float, float]:
    """Returns (wall seconds, CPU seconds) of the clip work, start-up and warm-up excluded."""
    for c in counts:
        (out / c).mkdir(parents=True, exist_ok=True)
    tasks = [(c, a, min(a + CHUNK, n), str(out)) for c, n in counts.items() for a in range(0, n, CHUNK)]
    if workers <= 1:
        _baseline_init(str(seeds), str(ir_dir), method, 0)
        t0 = time.perf_counter()
        results = [_baseline_chunk(t) for t in tasks]
        elapsed = time.perf_counter() - t0
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_baseline_init,
                                                    initargs=(str(seeds), str(ir_dir), method, 0)) as ex:
            pids = set(ex.map(_started, range(4 * workers)))  # start-up and warm-up are NOT timed
            t0 = time.perf_counter()
            results = list(ex.map(_baseline_chunk, tasks))
            elapsed = time.perf_counter() - t0
        print(f"baseline ran in {len(pids)} worker process(es)")
    assert sum(n for n, _ in results) == sum(counts.values())
    return elapsed, sum(c for _, c in results)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its reaped children (worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_ours(seeds: Path, out: Path, per_class: int, fondo_clips: int, workers: int) -> tuple[float, float]:
    """Returns (wall seconds, CPU seconds) of the whole stage: seeds, workers' start-up, clips, manifest."""
    argv = ["--params", str(ROOT / "pipeline/params/default/dataset.toml"), "--seeds", str(seeds), "--out", str(out),
            "--per-class", str(per_class), "--fondo-minutes", repr(fondo_clips / 60), "--workers", str(workers),
            "--no-progress"]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    rc = dataset.main(argv)
    elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    assert rc == 0
    return elapsed, cpu


def main() -> int:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one thread per worker process on both sides (inherited by spawn)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=Path, default=ROOT / "data" / "demo-seeds")
    ap.add_argument("--per-class", type=int, default=300, help="clips per keyword class")
    ap.add_argument("--fondo-clips", type=int, default=300, help="1 s FONDO clips")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both sides")
    ap.add_argument("--method", default="signalsmith_stretch", choices=["signalsmith_stretch", "librosa_phase_vocoder"],
                    help="audiomentations TimeStretch/PitchShift backend (its default is signalsmith_stretch)")
    ap.add_argument("--keep", type=Path, help="keep the outputs here instead of a temporary folder")
    args = ap.parse_args()
    import logging

    import audiomentations
    logging.basicConfig(level=logging.WARNING)
    classes = sorted(p.name for p in args.seeds.iterdir() if p.is_dir())
    counts = {c: (args.fondo_clips if c == "FONDO" else args.per_class) for c in classes}
    total = sum(counts.values())
    work = Path(tempfile.mkdtemp(prefix="bench-dataset-")) if args.keep is None else args.keep
    try:
        ir_dir = work / "irs"
        rng = np.random.default_rng(0)
        for k in range(N_IRS):  # the same kind of synthetic RIRs our side draws per clip
            h = A.synth_rir(float(rng.uniform(*A.RT60_RANGE_S)), float(rng.uniform(*A.DRR_RANGE_DB)),
                            float(rng.uniform(*A.PREDELAY_RANGE_MS)), int(rng.integers(2**31)), SR)
            ir_dir.mkdir(parents=True, exist_ok=True)
            sf.write(str(ir_dir / f"ir_{k:03d}.wav"), h / np.max(np.abs(h)), SR, subtype="FLOAT")
        print(f"seeds {args.seeds}: {len(classes)} classes, {total} clips per side "
              f"({args.per_class}/keyword class, {args.fondo_clips} FONDO), {args.workers} worker process(es), "
              f"{os.cpu_count()} CPU(s)")
        t_ours, c_ours = run_ours(args.seeds, work / "ours", args.per_class, args.fondo_clips, args.workers)
        t_base, c_base = run_baseline(args.seeds, work / "baseline", counts, args.workers, args.method, ir_dir)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    name = f"audiomentations {audiomentations.__version__}"
    print(f"{'':28s} {'clips/s (wall)':>15s} {'clips/CPU-s':>12s}   wall s   CPU s")
    print(f"{'pipeline.dataset':28s} {total / t_ours:15.1f} {total / c_ours:12.1f} {t_ours:8.1f} {c_ours:7.1f}")
    print(f"{name:28s} {total / t_base:15.1f} {total / c_base:12.1f} {t_base:8.1f} {c_base:7.1f}"
          f"   (method={args.method})")
    print(f"ratio ours / audiomentations: {t_base / t_ours:.2f}x wall, {c_base / c_ours:.2f}x CPU (target >= 5x)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s) "
          "(wall-clock figures are only meaningful on an otherwise idle machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
