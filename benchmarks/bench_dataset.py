"""Benchmark: our dataset stage vs the predecessor's recipe and vs audiomentations, same seeds, same run.

Four sides, each making the same number of clips per class from the same seeds, every clip as long as our
features' window (2 s by default; the predecessor cropped to 1 s, its model's window):

- ours: ``pipeline.stages.dataset`` with today's default recipe (formant warp, pitch, tempo, shift, reverb,
  noise, channel), the whole stage (clips.jsonl, manifest), ``--workers`` processes;
- the predecessor's recipe (ASRC ``make_dataset.py``) reimplemented with the same libraries: librosa
  load, resample round trip for tempo, ``librosa.effects.pitch_shift``, FONDO noise at 20/10/5/0 dB,
  fftconvolve reverb; one process, as its script runs (``--predecessor-workers``);
- audiomentations doing the predecessor's mix (TimeStretch, PitchShift, Shift, ApplyImpulseResponse,
  AddBackgroundNoise, Gain) in ``--workers`` processes;
- audiomentations doing our default recipe as far as it has the transforms (TimeStretch, PitchShift +-3,
  Shift +-700 ms, ApplyImpulseResponse, AddColorNoise, and the channel: high-pass + 7-band EQ, telephone band,
  low-pass for the low-rate round trip, Gain, BitCrush; it has no formant warp) in ``--workers`` processes.

Prints clips/s per side and ours / baseline (targets: >= 2x the predecessor, >= 5x audiomentations,
end-to-end wall). ``--profile`` adds the time per transform of our recipe. Not a test: it never fails on a
timing. Every process runs one thread (OMP/OpenBLAS/MKL/NUMBA set to 1). Reported per side: end to end
(worker start-up included) and steady state (baselines: after their workers started and warmed up; ours:
minus a 1-clip-per-class run). Rounds alternate the order; the best figure of each side is kept, as the
machine may be shared. Wall-clock and CPU-time (user + system of all processes) rates.

Needs the benchmark-only packages: ``pip install -r benchmarks/requirements.txt``.

Example::

    python benchmarks/bench_dataset.py --profile
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
from pipeline.core.workers import THREAD_VARS
from pipeline.stages import dataset

SR = 16000
N_IRS = 64
BASELINES = {"predecessor": "predecessor recipe (librosa)", "audiomentations": "audiomentations, its mix",
             "audiomentations-ours": "audiomentations, our recipe"}
CHUNK = 32
_B: dict[str, Any] = {}


def _baseline_init(seeds_dir: str, ir_dir: str, method: str, seed: int, clip: int, recipe: str) -> None:
    """audiomentations in a worker: ``recipe`` "predecessor" (the predecessor's mix) or "ours" (our default recipe
    as far as audiomentations has its transforms)."""
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
    if recipe == "predecessor":
        margin = 3200  # the predecessor's +-100 ms shift, plus room for the tempo change
        pre = am.Compose([
            am.TimeStretch(min_rate=0.9, max_rate=1.1, leave_length_unchanged=False, method=method, p=0.5),
            am.PitchShift(min_semitones=-1.0, max_semitones=1.0, method=method, p=0.5),
            am.Shift(min_shift=-0.1, max_shift=0.1, shift_unit="seconds", rollover=False, p=0.8),
        ])
        post = am.Compose([
            am.ApplyImpulseResponse(ir_path=ir_dir, p=0.3),
            am.AddBackgroundNoise(sounds_path=str(root / "FONDO"), min_snr_db=0.0, max_snr_db=20.0, p=0.9),
        ])
        background = am.Gain(min_gain_db=-12.0, max_gain_db=3.0, p=1.0)
    else:
        # The defaults of schemas/params/dataset.schema.json. Not in audiomentations: the formant warp (our side
        # does it to 80 % of the clips); the 8 / 11.025 kHz round trip becomes a low-pass at that Nyquist, mu-law
        # coding a linear 8-bit one.
        margin = 11200 + 3200  # the +-700 ms shift, plus room for the tempo change
        pre = am.Compose([
            am.TimeStretch(min_rate=0.9, max_rate=1.1, leave_length_unchanged=False, method=method, p=0.5),
            am.PitchShift(min_semitones=-3.0, max_semitones=3.0, method=method, p=0.8),
            am.Shift(min_shift=-0.7, max_shift=0.7, shift_unit="seconds", rollover=False, p=0.8),
        ])
        channel = [
            am.Compose([am.HighPassFilter(min_cutoff_freq=60.0, max_cutoff_freq=300.0, p=1.0),
                        am.SevenBandParametricEQ(min_gain_db=-6.0, max_gain_db=6.0, p=1.0)], p=0.3),
            am.Compose([am.HighPassFilter(min_cutoff_freq=300.0, max_cutoff_freq=300.0, p=1.0),
                        am.LowPassFilter(min_cutoff_freq=3400.0, max_cutoff_freq=3400.0, p=1.0)], p=0.1),
            am.LowPassFilter(min_cutoff_freq=4000.0, max_cutoff_freq=5512.0, p=0.15),
            am.Gain(min_gain_db=-12.0, max_gain_db=12.0, p=0.3),
            am.BitCrush(min_bit_depth=8, max_bit_depth=8, p=0.1),
        ]
        post = am.Compose([
            am.ApplyImpulseResponse(ir_path=ir_dir, p=0.3),
            am.AddColorNoise(min_snr_db=0.0, max_snr_db=20.0, p=0.9),
            *channel,
        ])
        background = am.Compose([am.AddColorNoise(min_snr_db=0.0, max_snr_db=20.0, p=0.5), *channel])
    _B.update(classes=classes, seeds=seeds, pre=pre, post=post, background=background, clip=clip, margin=margin)
    # Warm up (first calls load libraries and files): the baseline is timed in its steady state.
    x = np.zeros(clip + 2 * margin, dtype=np.float32)
    x[x.size // 2] = 0.5
    for _ in range(3):
        _B["post"](_B["pre"](x, SR)[:clip], SR)
        _B["background"](x[:clip], SR)


def _started(_: int) -> int:
    time.sleep(0.2)  # keep this worker busy so the next task starts (and initialises) another one
    return os.getpid()


def _baseline_chunk(task: tuple[str, int, int, str]) -> tuple[int, float]:
    """Make clips [start, stop) of one class; returns (clips, CPU seconds this took in the worker)."""
    cpu0 = time.process_time()
    cls, start, stop, out = task
    group = _B["seeds"][cls]
    n = _B["clip"]
    for i in range(start, stop):
        x, centre = group[i % len(group)]
        if cls == "FONDO":
            if x.size < n:
                x = np.tile(x, -(-n // x.size))
            off = np.random.randint(0, max(1, x.size - n))
            y = _B["background"](x[off: off + n], SR)
        else:
            half = n // 2 + _B["margin"]  # the window, and room for the shift and the tempo change
            seg = np.pad(x, (half, half))[centre: centre + 2 * half]
            seg = _B["pre"](seg, SR)
            c0 = seg.size // 2 - n // 2
            y = A.fit_length(seg[c0: c0 + n], n)
            y = _B["post"](y, SR)
        y = np.clip(y, -1.0, 1.0)
        sf.write(f"{out}/{cls}/{cls.lower()}_{i:05d}.wav", y, SR, subtype="PCM_16")
    return stop - start, time.process_time() - cpu0


# ---- the predecessor's recipe (ASRC make_dataset.py), reimplemented from its description ----------------
# Per keyword clip: read the seed file (librosa.load), shift (p 0.8, +-100 ms, zero fill), tempo change
# (p 0.5, rate 0.9-1.1, as a librosa.resample round trip to SR*rate and back), pitch shift (p 0.5, +-1
# semitone, librosa.effects.pitch_shift), a random 1 s crop or centred zero pad, FONDO noise (p 0.9, SNR
# from 20/10/5/0 dB, peak-normalised to 0.99), reverb (p 0.3, fftconvolve, 30 % wet). Per FONDO clip: a
# random 1 s cut of a FONDO recording, reverb with p 0.2. One process (the script has no pool).
_P: dict[str, Any] = {}


def _predecessor_init(seeds_dir: str, ir_dir: str, seed: int, clip: int) -> None:
    import random

    import librosa

    random.seed(seed)
    np.random.seed(seed)
    root = Path(seeds_dir)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = {c: sorted(str(p) for p in (root / c).rglob("*.wav")) for c in classes}

    def load(path: str) -> np.ndarray:
        x, _ = librosa.load(path, sr=SR, mono=True)
        return (x - np.mean(x)).astype(np.float32)

    _P.update(classes=classes, files=files, load=load, clip=clip,
              noises=[load(f) for f in files.get("FONDO", [])],
              rirs=[load(str(f)) for f in sorted(Path(ir_dir).glob("*.wav"))])
    x = np.zeros(SR, dtype=np.float32)
    x[SR // 2] = 0.5
    librosa.effects.pitch_shift(y=x, sr=SR, n_steps=0.5)  # first calls load librosa's lazy modules
    librosa.resample(x, orig_sr=SR, target_sr=int(SR * 0.95))


def _noise_segment(n: int) -> np.ndarray:
    import random

    x = random.choice(_P["noises"])
    if x.size < n:
        x = np.tile(x, -(-n // x.size))
    a = random.randint(0, x.size - n)
    return x[a: a + n].copy()


def _predecessor_clip(cls: str) -> np.ndarray:
    import random

    import librosa
    from scipy.signal import fftconvolve

    def reverb(x: np.ndarray) -> np.ndarray:
        wet = fftconvolve(x, random.choice(_P["rirs"]), mode="full")[: x.size]
        return (0.7 * x + 0.3 * wet).astype(np.float32)

    n = _P["clip"]
    if cls == "FONDO":
        y = _noise_segment(n)
        return reverb(y) if random.random() < 0.2 and _P["rirs"] else y
    x = _P["load"](random.choice(_P["files"][cls]))
    if random.random() < 0.8:
        s = random.randint(-SR // 10, SR // 10)
        x = np.r_[np.zeros(s, x.dtype), x[:-s]] if s > 0 else (np.r_[x[-s:], np.zeros(-s, x.dtype)] if s < 0 else x)
    if random.random() < 0.5:
        rate = random.uniform(0.9, 1.1)
        x = librosa.resample(librosa.resample(x, orig_sr=SR, target_sr=int(SR * rate)),
                             orig_sr=int(SR * rate), target_sr=SR).astype(np.float32)
    if random.random() < 0.5:
        x = librosa.effects.pitch_shift(y=x, sr=SR, n_steps=random.uniform(-1.0, 1.0)).astype(np.float32)
    if x.size >= n:
        a = random.randint(0, x.size - n)
        x = x[a: a + n]
    else:
        x = np.pad(x, ((n - x.size) // 2, n - x.size - (n - x.size) // 2))
    if random.random() < 0.9 and _P["noises"]:
        snr = random.choice((20.0, 10.0, 5.0, 0.0))
        n = _noise_segment(x.size)
        ps, pn = float(np.mean(x ** 2)) + 1e-12, float(np.mean(n ** 2)) + 1e-12
        x = x + np.sqrt(ps / (pn * 10 ** (snr / 10))) * n
        peak = max(1e-8, float(np.max(np.abs(x))))
        x = (x / peak * 0.99 if peak > 0.99 else x).astype(np.float32)
    if random.random() < 0.3 and _P["rirs"]:
        x = reverb(x)
    return x


def _predecessor_chunk(task: tuple[str, int, int, str]) -> tuple[int, float]:
    cpu0 = time.process_time()
    cls, start, stop, out = task
    for i in range(start, stop):
        sf.write(f"{out}/{cls}/{cls.lower()}_{i:05d}.wav", _predecessor_clip(cls), SR, subtype="PCM_16")
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


def run_pool(init: Any, initargs: tuple[Any, ...], chunk: Any, out: Path, counts: dict[str, int],
             workers: int) -> Timing:
    """A baseline in a pool of ``workers`` spawned processes. Steady state = after every worker has
    started and warmed up (library imports, first calls)."""
    for c in counts:
        (out / c).mkdir(parents=True, exist_ok=True)
    tasks = [(c, a, min(a + CHUNK, n), str(out)) for c, n in counts.items() for a in range(0, n, CHUNK)]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=init, initargs=initargs) as ex:
        pids = set(ex.map(_started, range(4 * workers)))
        t1 = time.perf_counter()
        results = list(ex.map(chunk, tasks))
        t2 = time.perf_counter()
    total_wall, total_cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    assert sum(n for n, _ in results) == sum(counts.values()) and len(pids) == workers, pids
    return Timing(total_wall, total_cpu, t2 - t1, sum(c for _, c in results))


def _ours_once(seeds: Path, extra: Path | None, out: Path, per_class: int, fondo_clips: int,
               workers: int) -> tuple[float, float]:
    argv = ["--seeds", str(seeds), "--out", str(out), *(["--extra-seeds", str(extra)] if extra else []),
            "--per-class", str(per_class), "--fondo-minutes", repr(fondo_clips / 60), "--workers", str(workers),
            "--no-progress"]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    rc = dataset.main(argv)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    assert rc == 0
    out.rename(out.with_name(f"{out.name}-done-{time.monotonic_ns()}"))  # deleted at the end, untimed
    return wall, cpu


def run_ours(seeds: Path, extra: Path | None, out: Path, per_class: int, fondo_clips: int, workers: int) -> Timing:
    """The whole stage (``pipeline.stages.dataset.main``: seeds, workers, clips, clips.jsonl, manifest).
    Steady state = this run minus a run of 1 clip per class with the same workers (its fixed cost)."""
    wall, cpu = _ours_once(seeds, extra, out, per_class, fondo_clips, workers)
    wall0, cpu0 = _ours_once(seeds, extra, out, 1, 1, workers)
    return Timing(wall, cpu, max(wall - wall0, 1e-9), max(cpu - cpu0, 1e-9))


def profile(seeds: Path, extra: Path | None, per_class: int, fondo_clips: int) -> None:
    """Our clips made one by one in this process with the default recipe, each transform timed."""
    from pipeline.core.params import defaults

    params = {**defaults("dataset"), "per_class": per_class}
    bank = dataset.load_bank(seeds, params["rirs_root"], extra)[0]
    recipe = dataset.make_recipe(params, bank)
    counts = dataset.class_counts(bank, per_class, fondo_clips / 60)
    spent: dict[str, list[float]] = {}
    inner: list[float] = []  # per active timed call: time spent in timed calls it made (excluded from its own)

    def timed(label: str, fn: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            inner.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                took = time.perf_counter() - t0
                e = spent.setdefault(label, [0, 0.0])
                e[0] += 1
                e[1] += took - inner.pop()
                if inner:
                    inner[-1] += took
        return run

    patches = [(A, "analyse", "phase-vocoder analysis"), (A, "synthesise", "phase-vocoder synthesis"),
               (A.FormantWarp, "apply", "formant warp (background clips)"), (A.Reverb, "apply", "reverb"),
               (A.Noise, "apply", "noise"), (A.Gain, "apply", "background gain"), (A.Channel, "apply", "channel"),
               (A, "protect_clipping", "peak protection"), (dataset, "plan_clip", "drawing (clips.jsonl record)"),
               (dataset, "wav_bytes", "16-bit WAV encoding")]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, label in patches:
        setattr(obj, name, timed(label, getattr(obj, name)))
    try:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            dataset.generate(bank, recipe, params["seed"], counts, Path(tmp), 1, progress=False)
        total = time.perf_counter() - t0
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    n = sum(counts.values())
    rest = total - sum(t for _, t in spent.values())
    print(f"\nprofile: {n} clips ({per_class}/keyword class, {counts['FONDO']} FONDO), default recipe, one process, "
          f"{total:.2f} s = {n / total:.0f} clips/s")
    print(f"{'part':40s} {'calls':>7s} {'ms/clip':>8s} {'share':>6s}")
    for label, (calls, t) in sorted(spent.items(), key=lambda kv: -kv[1][1]) + [("rest (cropping, file writes, ...)",
                                                                                 (0, rest))]:
        print(f"{label:40s} {calls:7d} {t / n * 1e3:8.3f} {t / total:6.1%}")


def main() -> int:
    for var in (*THREAD_VARS, "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one thread per worker process on all sides (inherited by spawn)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=Path, default=ROOT / "data" / "demo-seeds")
    ap.add_argument("--extra-seeds", type=Path, help="our side also draws on these synthetic voices (make voices)")
    ap.add_argument("--per-class", type=int, default=1000, help="clips per keyword class")
    ap.add_argument("--fondo-clips", type=int, default=1200,
                    help="1 s FONDO clips (default: the predecessor's mix, 3,000 per class to 60 min of FONDO, "
                         "scaled by a third; our default preset makes 1,000 per class and 7,200 FONDO clips)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes for our stage and audiomentations")
    ap.add_argument("--predecessor-workers", type=int, default=1,
                    help="processes for the predecessor's recipe (its script runs in one)")
    ap.add_argument("--method", default="signalsmith_stretch", choices=["signalsmith_stretch", "librosa_phase_vocoder"],
                    help="audiomentations TimeStretch/PitchShift backend (its default is signalsmith_stretch)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best time of each side is kept")
    ap.add_argument("--only", choices=list(BASELINES), action="append", help="baselines to run (default: all)")
    ap.add_argument("--profile", action="store_true",
                    help="also time each of our transforms (one process) and print the breakdown")
    ap.add_argument("--keep", type=Path, help="keep the outputs here instead of a temporary folder")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    baselines = args.only or list(BASELINES)
    clip = dataset.DEFAULT_CLIP_SAMPLES  # every side makes clips of our features' window
    classes = sorted(p.name for p in args.seeds.iterdir() if p.is_dir())
    counts = {c: (args.fondo_clips if c == "FONDO" else args.per_class) for c in classes}
    total = sum(counts.values())
    work = Path(tempfile.mkdtemp(prefix="bench-dataset-")) if args.keep is None else args.keep
    times: dict[str, list[Timing]] = {"ours": [], **{b: [] for b in baselines}}
    loads = []
    try:
        ir_dir = work / "irs"
        rng = np.random.default_rng(0)
        for k in range(N_IRS):  # the same kind of synthetic RIRs our side draws per clip
            h = A.synth_rir(float(rng.uniform(*A.RT60_RANGE_S)), float(rng.uniform(*A.DRR_RANGE_DB)),
                            float(rng.uniform(*A.PREDELAY_RANGE_MS)), int(rng.integers(2**31)), SR)
            ir_dir.mkdir(parents=True, exist_ok=True)
            sf.write(str(ir_dir / f"ir_{k:03d}.wav"), h / np.max(np.abs(h)), SR, subtype="FLOAT")
        print(f"seeds {args.seeds}{f' + {args.extra_seeds} (ours only)' if args.extra_seeds else ''}: "
              f"{len(classes)} classes, {total} clips of {clip / SR:g} s per side and round ({args.per_class}/keyword class, "
              f"{args.fondo_clips} FONDO); workers: ours {args.workers}, audiomentations {args.workers}, "
              f"predecessor {args.predecessor_workers}; {os.cpu_count()} CPU(s); {args.rounds} alternating rounds "
              f"(best of each side kept)")
        for r in range(args.rounds):
            sides = list(times)
            for side in (sides if r % 2 == 0 else sides[::-1]):
                out = work / f"{side}{r}"
                if side == "ours":
                    t = run_ours(args.seeds, args.extra_seeds, out, args.per_class, args.fondo_clips, args.workers)
                elif side == "predecessor":
                    t = run_pool(_predecessor_init, (str(args.seeds), str(ir_dir), r, clip), _predecessor_chunk, out,
                                 counts, args.predecessor_workers)
                else:
                    recipe = "ours" if side == "audiomentations-ours" else "predecessor"
                    t = run_pool(_baseline_init, (str(args.seeds), str(ir_dir), args.method, r, clip, recipe),
                                 _baseline_chunk, out, counts, args.workers)
                times[side].append(t)
                loads.append(os.getloadavg()[0])
                shutil.rmtree(out, ignore_errors=True)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1].total_wall_s:.1f} s" for k, v in times.items()),
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    def best(side: str, field: str) -> float:
        return min(getattr(t, field) for t in times[side])

    fields = ("total_wall_s", "total_cpu_s", "steady_wall_s", "steady_cpu_s")
    import audiomentations

    labels = {"ours": "pipeline.stages.dataset", **BASELINES}
    for side in ("audiomentations", "audiomentations-ours"):
        labels[side] = labels[side].replace("audiomentations", f"audiomentations {audiomentations.__version__}")
    print(f"\n{'clips/s':34s} {'end-to-end wall':>16s} {'end-to-end CPU':>15s} {'steady wall':>12s} {'steady CPU':>11s}")
    for side in times:
        print(f"{labels[side]:34s} " + " ".join(f"{total / best(side, f):{w}.1f}" for f, w in zip(fields, (16, 15, 12, 11))))
    targets = {"predecessor": 2.0, "audiomentations": 5.0, "audiomentations-ours": 5.0}
    for side in baselines:
        ratios = [best(side, f) / best("ours", f) for f in fields]
        print(f"{'ratio ours / ' + side:34s} " + " ".join(f"{x:{w - 1}.2f}x" for x, w in zip(ratios, (16, 15, 12, 11)))
              + f"   (target >= {targets[side]:g}x, end-to-end wall)")
    print(f"(CPU = clips per CPU-second, user + system, all processes; audiomentations TimeStretch/PitchShift "
          f"method={args.method}; 1-min load average during the run {min(loads):.1f}-{max(loads):.1f} on "
          f"{os.cpu_count()} CPU(s): wall figures are only meaningful on an otherwise idle machine)")
    if args.profile:
        profile(args.seeds, args.extra_seeds, args.per_class, args.fondo_clips)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
