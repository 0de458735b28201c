"""Benchmark: the board runtime's compute per 100 ms hop (features, inference, detector; p50/p99) and real-time factor.

Runs the runtime's own loop (device.runtime.listen.Listener, --fast) over the demo stream (data/demo-stream:
commands + keyword-free talk, about 33 s) with:

  host CPU        the float ONNX model with ONNX Runtime (what pipeline.eval.detect runs)
  board EMULATOR  the EMULATED axmodel through the emulator's axengine (INT8 QDQ model, ONNX Runtime, 1 thread):
                  the board's code path exactly, with the CPU standing in for the NPU

and, as the baseline measured in the same run, the front end recomputing every frame of each window
(device.runtime.frontend.Frontend) and the pipeline's torch log-Mel per window, against the streaming front end
that computes each frame once. The AX630C budget is the hop, 100 ms; the NPU's own time per inference is
known only from the seed's ax_run_model log (about 1.06 ms for the CRNN); no board was measured here.
A timing, not a test: it never fails on a number.

    python benchmarks/bench_runtime.py --build build
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "device" / "emulator"))  # the emulator's axengine, as on the emulated board

from device.runtime.frontend import Frontend
from device.runtime.listen import Listener, load_runtime
from pipeline.audio.wav import load_audio


def run(spec: dict, fb: np.ndarray, model: str, audio: np.ndarray) -> dict:
    listener = Listener(spec, fb, model)
    t0 = time.perf_counter()
    for i in range(0, audio.size, listener.hop):
        listener.feed(audio[i:i + listener.hop], time.monotonic(), io.StringIO())
    listener.finish(io.StringIO())
    wall = time.perf_counter() - t0
    return {**listener.stats(audio.size / listener.sample_rate), "wall_s": round(wall, 3)}


def frontend_baselines(spec: dict, fb: np.ndarray, audio: np.ndarray, hop: int) -> dict:
    from pipeline.audio.features import logmel
    from pipeline.core.contract import FeatureContract

    contract = FeatureContract.from_mapping(spec["contract"])
    whole = Frontend(spec["contract"], fb)
    n = contract.clip_samples
    starts = range(0, audio.size - n + 1, hop)
    out = {}
    for name, fn in (("numpy, whole window each hop", whole.logmel), ("torch logmel (pipeline), per window",
                                                                       lambda w: logmel(w, contract))):
        times = []
        for s in starts:
            t = time.perf_counter()
            fn(audio[s:s + n])
            times.append((time.perf_counter() - t) * 1e3)
        out[name] = {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", type=Path, default=ROOT / "build")
    p.add_argument("--stream", type=Path, default=ROOT / "data" / "demo-stream")
    args = p.parse_args()
    spec, fb = load_runtime(args.build / "runtime")
    audio = np.concatenate([load_audio(args.stream / "commands.wav"), load_audio(args.stream / "talk.wav")])
    engines = {"host CPU (float ONNX, onnxruntime)": str(args.build / "model" / "kws.onnx"),
               "board EMULATOR (EMULATED axmodel, axengine stand-in)": str(args.build / "pulsar2" / "output" / "compiled.axmodel")}
    results = {name: run(spec, fb, model, audio) for name, model in engines.items()}
    hop = round(spec["detector"]["hop_s"] * spec["contract"]["sample_rate"])
    base = frontend_baselines(spec, fb, audio, hop)
    print(f"runtime per {spec['detector']['hop_s'] * 1e3:.0f} ms hop on {audio.size / 16000:.1f} s of the demo stream "
          f"({time.strftime('%Y-%m-%d')}, {args.build}):")
    print(f"  {'engine':<55} {'features p50/p99':>18} {'inference p50/p99':>19} {'detector p50':>13} {'RTF':>8}")
    for name, r in results.items():
        f, i, d = r["features_ms"], r["inference_ms"], r["detector_ms"]
        print(f"  {name:<55} {f['p50']:7.3f}/{f['p99']:7.3f} ms {i['p50']:7.3f}/{i['p99']:7.3f} ms "
              f"{d['p50']:9.4f} ms {r['real_time_factor']:8.4f}")
    stream = results[next(iter(results))]["features_ms"]
    print("  front end baselines (same windows):")
    for name, b in base.items():
        print(f"    {name:<45} p50 {b['p50']:.3f} ms  p99 {b['p99']:.3f} ms  -> streaming front end is "
              f"{b['p50'] / max(stream['p50'], 1e-9):.1f}x faster at p50")
    worst = max(r["features_ms"]["p99"] + r["inference_ms"]["p99"] + r["detector_ms"]["p99"] for r in results.values())
    print(f"  AX630C budget per hop: {spec['detector']['hop_s'] * 1e3:.0f} ms; worst p99 compute here {worst:.2f} ms "
          f"({worst / (spec['detector']['hop_s'] * 1e3):.1%} of it). NPU time per inference on the AX630C: about 1.06 ms "
          "for the CRNN (the seed's ax_run_model log); not measured here (no board).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
