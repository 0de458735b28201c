"""Benchmark: eval-npu wall time for N inputs vs N x one bare ``ax_run_model`` run, on the board EMULATOR.

Starts a private sshd on 127.0.0.1 serving the emulator (device.emulator.launch), deploys a bundle of N
inputs, then times

  baseline  one SSH command whose shell loop runs ``ax_run_model -m … -i … -o … -l <one-entry list>`` N times
            (the unavoidable cost: one tool start per input), and
  eval-npu  device.evaluate.eval_npu(mode="per-input", fresh=True): probe, remote loop with commit/log per
            input, one tar pull, ONNX Runtime on the host, report (JSON + text + PNG),

and prints the ratio (target <= 1.2 plus a few seconds of fixed cost). A timing, not a test: it never fails
on a number. Traffic stays on 127.0.0.1.

    python benchmarks/bench_eval_npu.py --n 300
    python benchmarks/bench_eval_npu.py --build build     # the real build/ artifacts instead of a tiny model
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.bundle import collect_bundle
from device.deploy import deploy
from device.emulator.launch import board_environment, free_port, install_emulator_bin, start_local_sshd
from device.evaluate import eval_npu
from device.ssh import BoardSpec, connect, open_connection, run_script

BASELINE = r"""
ax=$1 model=$2 inputs=$3 work=$4
shift 4
for k in "$@"; do
  mkdir -p "$work/$k" && printf '%s\n' "$k" > "$work/$k/list.txt"
  "$ax" -m "$model" -i "$inputs" -o "$work/$k/out/" -l "$work/$k/list.txt" > "$work/$k/log.txt" 2>&1
done
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="number of inputs")
    p.add_argument("--build", type=Path, help="use this build folder (default: a tiny generated model)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-npu-"))
    try:
        if args.build:
            build = args.build
        else:
            from tests.device.tiny_model import make_build

            build = make_build(tmp / "build", n_inputs=args.n)
        bundle = collect_bundle(build)
        ids = bundle.ids[: args.n]
        bin_dir = tmp / "bin"
        install_emulator_bin(bin_dir)
        (tmp / "home").mkdir()
        board = start_local_sshd(tmp / "sshd", free_port(), {"board": board_environment(tmp, bin_dir)})
        try:
            spec = BoardSpec("127.0.0.1", board.port, key_filename=str(board.client_key()), known_hosts=str(board.known_hosts))
            conn = open_connection(connect(spec))
            root = str(tmp / "remote root")
            deploy(conn, build, root)
            model = f"{root}/{bundle.bundle_id}/model/compiled.axmodel"

            def baseline(tag: str) -> float:
                t0 = time.perf_counter()
                r = run_script(conn, BASELINE, [str(bin_dir / "ax_run_model"), model, f"{root}/{bundle.bundle_id}/input/",
                                                str(tmp / f"baseline-{tag}"), *ids], "baseline")
                if r.exited != 0:
                    raise SystemExit(f"baseline loop failed: {r.stderr}")
                return time.perf_counter() - t0

            # baseline before AND after eval-npu: the machine is shared, so load drifts between phases
            load = [os.getloadavg()[0]]
            base_before = baseline("before")
            load.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            rep = eval_npu(conn, build, root, tmp / "device", spec.label, mode="per-input", limit=args.n, fresh=True)
            eval_s = time.perf_counter() - t0
            load.append(os.getloadavg()[0])
            base_after = baseline("after")
            load.append(os.getloadavg()[0])
            base_s = (base_before + base_after) / 2
            conn.close()
        finally:
            board.stop()
        n = len(ids)
        print(f"inputs: {n} ({'tiny generated model' if not args.build else build}); board: EMULATOR on 127.0.0.1")
        print(f"1-min load average at the phase boundaries: {', '.join(f'{x:.1f}' for x in load)} (2 cores)")
        print(f"baseline  {n} x one ax_run_model run (one SSH command): before {base_before:.2f} s, after "
              f"{base_after:.2f} s, mean {base_s:8.2f} s  ({1e3 * base_s / n:.0f} ms/input)")
        print(f"eval-npu  per-input, fresh, incl. pull + ONNX + report:  {eval_s:8.2f} s  "
              f"(agreement {rep['agreement']}, compared {rep['n_compared']}, failed {rep['n_failed']})")
        sec = rep["this_call"]["seconds"]
        print(f"  of which: probe {sec['probe']:.2f} s, board loop {sec['board_loop']:.2f} s "
              f"(vs baseline {base_s:.2f} s: {sec['board_loop'] / base_s:.3f}x), one-tar pull {sec['pull']:.2f} s, "
              f"host side (bundle hash, ONNX, report) {eval_s - sum(sec.values()):.2f} s")
        print(f"ratio eval-npu / baseline = {eval_s / base_s:.3f}   fixed+per-input overhead = {eval_s - base_s:+.2f} s "
              "(target: ratio <= 1.2 plus a few seconds of fixed cost)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
