"""Benchmark: our dataset stage vs audiomentations doing the same augmentation mix on the same seeds.

Both sides, in the same run, with the same number of worker processes and clips: read the seeds,
crop 1 s around the word, tempo change (p 0.5, 0.9-1.1), pitch shift (p 0.5, +-1 semitone), time
shift (p 0.8, +-100 ms), reverb (p 0.3, synthetic room impulse responses), FONDO noise (p 0.9, SNR
0-20 dB), background clips cut from FONDO with a random gain, and write 16-bit WAVs. Prints clips/s
for both and the ratio (target: ours >= 5x). Not a test: it never fails on a timing.

Both sides run in ``--workers`` spawned processes with one thread each (OMP/OpenBLAS/MKL/NUMBA set
to 1). Reported per side: end to end (worker start-up included; ours is the whole stage with
clips.jsonl and manifest) and steady state (baseline: after its workers started and warmed up; ours:
minus a 1-clip-per-class run). Rounds alternate the order; the best figure of each side is kept,
as the machine may be shared. Wall-clock and CPU-time (user + system of all processes) rates.

Needs the benchmark-only packages: ``pip install -r benchmarks/requirements.txt``.

Example::

    python benchmarks/bench_dataset.py --seeds data/demo-seeds --per-class 300 --fondo-clips 300
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
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

from pipeline.audio import augment as A
from pipeline.audio.locate import locate_word
from pipeline.stages import dataset

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


@dataclasses.dataclass
class Timing:
    total_wall_s: float  # end to end, worker start-up included
    total_cpu_s: float
    steady_wall_s: float  # the clip work alone (start-up excluded)
    steady_cpu_s: float


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its reaped children (worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_baseline(seeds: Path, out: Path, counts: dict[str, int], workers: int, method: str, ir_dir: Path) -> Timing:
    """audiomentations in a pool of ``workers`` spawned processes. Steady state = after every worker
    has started and warmed up (library imports, first calls)."""
    for c in counts:
        (out / c).mkdir(parents=True, exist_ok=True)
    tasks = [(c, a, min(a + CHUNK, n), str(out)) for c, n in counts.items() for a in range(0, n, CHUNK)]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_baseline_init,
                                                initargs=(str(seeds), str(ir_dir), method, 0)) as ex:
        pids = set(ex.map(_started, range(4 * workers)))
        t1 = time.perf_counter()
        results = list(ex.map(_baseline_chunk, tasks))
        t2 = time.perf_counter()
    total_wall, total_cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    assert sum(n for n, _ in results) == sum(counts.values()) and len(pids) == workers, pids
    return Timing(total_wall, total_cpu, t2 - t1, sum(c for _, c in results))


def _ours_once(seeds: Path, out: Path, per_class: int, fondo_clips: int, workers: int) -> tuple[float, float]:
    argv = ["--seeds", str(seeds), "--out", str(out),
            "--per-class", str(per_class), "--fondo-minutes", repr(fondo_clips / 60), "--workers", str(workers),
            "--no-progress"]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    rc = dataset.main(argv)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    assert rc == 0
    out.rename(out.with_name(f"{out.name}-done-{time.monotonic_ns()}"))  # deleted at the end, untimed
    return wall, cpu


def run_ours(seeds: Path, out: Path, per_class: int, fondo_clips: int, workers: int) -> Timing:
    """The whole stage (``pipeline.stages.dataset.main``: seeds, workers, clips, clips.jsonl, manifest).
    Steady state = this run minus a run of 1 clip per class with the same workers (its fixed cost)."""
    wall, cpu = _ours_once(seeds, out, per_class, fondo_clips, workers)
    wall0, cpu0 = _ours_once(seeds, out, 1, 1, workers)
    return Timing(wall, cpu, max(wall - wall0, 1e-9), max(cpu - cpu0, 1e-9))


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
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best time of each side is kept")
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
        print(f"seeds {args.seeds}: {len(classes)} classes, {total} clips per side and round "
              f"({args.per_class}/keyword class, {args.fondo_clips} FONDO), {args.workers} worker process(es) "
              f"each side, {os.cpu_count()} CPU(s), {args.rounds} alternating rounds (best of each is kept)")
        ours: list[Timing] = []
        base: list[Timing] = []
        loads = []
        for r in range(args.rounds):
            for side in (("ours", "base") if r % 2 == 0 else ("base", "ours")):
                if side == "ours":
                    ours.append(run_ours(args.seeds, work / "ours", args.per_class, args.fondo_clips, args.workers))
                else:
                    base.append(run_baseline(args.seeds, work / f"baseline{r}", counts, args.workers, args.method,
                                             ir_dir))
                loads.append(os.getloadavg()[0])
            print(f"round {r + 1}: ours {ours[-1].total_wall_s:.1f} s, audiomentations {base[-1].total_wall_s:.1f} s",
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    def best(ts: list[Timing], field: str) -> float:
        return min(getattr(t, field) for t in ts)

    name = f"audiomentations {audiomentations.__version__}"
    print(f"\n{'clips/s':28s} {'end-to-end wall':>16s} {'end-to-end CPU':>15s} {'steady wall':>12s} {'steady CPU':>11s}")
    for label, ts in (("pipeline.stages.dataset", ours), (name, base)):
        print(f"{label:28s} {total / best(ts, 'total_wall_s'):16.1f} {total / best(ts, 'total_cpu_s'):15.1f} "
              f"{total / best(ts, 'steady_wall_s'):12.1f} {total / best(ts, 'steady_cpu_s'):11.1f}")
    ratios = [best(base, f) / best(ours, f) for f in ("total_wall_s", "total_cpu_s", "steady_wall_s", "steady_cpu_s")]
    print(f"{'ratio ours / audiomentations':28s} {ratios[0]:15.2f}x {ratios[1]:14.2f}x {ratios[2]:11.2f}x "
          f"{ratios[3]:10.2f}x   (target >= 5x)")
    print(f"(CPU = clips per CPU-second, user + system, all processes; audiomentations TimeStretch/PitchShift "
          f"method={args.method}; 1-min load average during the run {min(loads):.1f}-{max(loads):.1f} on "
          f"{os.cpu_count()} CPU(s): wall figures are only meaningful on an otherwise idle machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
