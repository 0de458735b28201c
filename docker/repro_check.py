"""Reproducibility check: two clean builds with the same params give byte-identical data artifacts.

Runs ``make RUNNER=<r> PARAMS=<p> BUILD=<dir> dataset features calib`` in two fresh build folders
(deleted first) and compares, byte for byte, every dataset file (WAVs and clips.jsonl), the packed
features (features.npy, index.jsonl) and the calibration tar. The two runs may use different runners
(``--runner-b local``): then the check also shows the container and the host compute the same features.
Manifests are not compared (they hold timestamps and the image id by design). With ``--onnx`` both
builds also train and export, and the two ONNX models must give identical logits (bit for bit) on every
feature row (the files themselves differ: their metadata records the image id and the time).

    python3 docker/repro_check.py --params smoke --build-a build-repro-a --build-b build-repro-b
    python3 docker/repro_check.py --params smoke --runner-a docker --runner-b local --onnx
    python3 docker/repro_check.py --params smoke --runner-a docker --runner-b local --base-image kws-base:bookworm
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.io import sha256_file

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("dataset", "features", "calib")
# What must be identical, relative to the build folder; folders are compared file by file.
COMPARED = ("dataset", "features/features.npy", "features/index.jsonl", "calib/calib_kws.tar")
IGNORED_NAMES = {"manifest.json"}


@dataclasses.dataclass(frozen=True)
class Difference:
    path: str
    what: str


def artifact_files(build: Path, compared: Sequence[str] = COMPARED) -> dict[str, Path]:
    """Relative path -> file, for every compared artifact in ``build`` (manifests excluded)."""
    out: dict[str, Path] = {}
    for rel in compared:
        p = build / rel
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.name not in IGNORED_NAMES:
                    out[f.relative_to(build).as_posix()] = f
        elif p.is_file():
            out[rel] = p
    return out


def compare_builds(a: Path, b: Path, compared: Sequence[str] = COMPARED) -> tuple[int, list[Difference]]:
    """(number of files compared, differences); a compared artifact missing from both is a difference too."""
    fa, fb = artifact_files(a, compared), artifact_files(b, compared)
    diffs: list[Difference] = []
    for rel in compared:
        if not any(k == rel or k.startswith(rel + "/") for k in fa.keys() | fb.keys()):
            diffs.append(Difference(rel, "missing from both builds"))
    for rel in sorted(fa.keys() | fb.keys()):
        if rel not in fa:
            diffs.append(Difference(rel, f"only in {b}"))
        elif rel not in fb:
            diffs.append(Difference(rel, f"only in {a}"))
        elif fa[rel].stat().st_size != fb[rel].stat().st_size:
            diffs.append(Difference(rel, f"size {fa[rel].stat().st_size} != {fb[rel].stat().st_size}"))
        elif sha256_file(fa[rel]) != sha256_file(fb[rel]):
            diffs.append(Difference(rel, "same size, different bytes"))
    return len(fa.keys() & fb.keys()), diffs


def compare_onnx_predictions(onnx_a: Path, onnx_b: Path, features_npy: Path) -> tuple[int, float]:
    """(rows, max |logit_a - logit_b|) of the two models on every row of ``features_npy``."""
    import numpy as np

    from pipeline.model.infer import OnnxModel

    x = np.load(features_npy, mmap_mode="r")
    la = OnnxModel(onnx_a).logits(np.ascontiguousarray(x))
    lb = OnnxModel(onnx_b).logits(np.ascontiguousarray(x))
    return len(x), float(np.max(np.abs(la - lb))) if len(x) else 0.0


def make_command(runner: str, params: str, build: Path, seeds: str | None, base_image: str | None,
                 onnx: bool = False) -> list[str]:
    # NEURAL_CACHE= : both builds say everything themselves, or the second would read the first's neural takes
    cmd = ["make", "--no-print-directory", f"RUNNER={runner}", f"PARAMS={params}", f"BUILD={build}", "NEURAL_CACHE="]
    if seeds:
        cmd.append(f"SEEDS={seeds}")
    if base_image:
        cmd.append(f"BASE_IMAGE={base_image}")
    return [*cmd, *TARGETS, *(["onnx"] if onnx else [])]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--params", default="smoke", help="params preset (pipeline/params/presets/<PRESET>.toml)")
    p.add_argument("--build-a", type=Path, default=Path("build-repro-a"), help="first build folder (deleted first)")
    p.add_argument("--build-b", type=Path, default=Path("build-repro-b"), help="second build folder (deleted first)")
    p.add_argument("--runner-a", choices=["auto", "docker", "local"], default="auto")
    p.add_argument("--runner-b", choices=["auto", "docker", "local"], default="auto")
    p.add_argument("--seeds", default=None, help="seeds folder (default: the Makefile's SEEDS)")
    p.add_argument("--base-image", default=None, help="BASE_IMAGE for a docker runner's image build")
    p.add_argument("--onnx", action="store_true", help="also train + export in both and require identical logits")
    p.add_argument("--keep", action="store_true", help="keep the two build folders")
    args = p.parse_args(argv)
    setup_logging()

    if args.build_a.resolve() == args.build_b.resolve():
        die(f"--build-a and --build-b are both {args.build_a}; give two different folders")
    for build, runner in ((args.build_a, args.runner_a), (args.build_b, args.runner_b)):
        # Keep a built image id: the image is the toolchain, not an artifact under test.
        ids = build / "images"
        saved = None
        if ids.is_dir():
            saved = build.parent / f".{build.name}.images-keep"
            shutil.rmtree(saved, ignore_errors=True)
            ids.rename(saved)
        shutil.rmtree(build, ignore_errors=True)
        if saved is not None:
            build.mkdir(parents=True)
            saved.rename(ids)
        cmd = make_command(runner, args.params, build, args.seeds, args.base_image, args.onnx)
        print(f"repro: {shlex.join(cmd)}", flush=True)
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=ROOT, check=False)
        if r.returncode != 0:
            die(f"{build}: `{shlex.join(cmd)}` failed with exit status {r.returncode} (log above)")
        print(f"repro: {build} built in {time.monotonic() - t0:.1f} s", flush=True)

    n, diffs = compare_builds(args.build_a, args.build_b)
    onnx_line = ""
    if args.onnx and not diffs:
        rows, max_abs = compare_onnx_predictions(args.build_a / "model" / "kws.onnx", args.build_b / "model" / "kws.onnx",
                                                 args.build_a / "features" / "features.npy")
        if max_abs != 0.0:
            diffs.append(Difference("model/kws.onnx", f"logits differ on {rows} feature rows: max |diff| {max_abs:.3g}"))
        onnx_line = f"; ONNX logits identical on {rows} rows"
    if not args.keep:
        for build in (args.build_a, args.build_b):
            for sub in (*TARGETS, "model", "reports"):
                shutil.rmtree(build / sub, ignore_errors=True)
    if diffs:
        lines = "\n".join(f"  {d.path}: {d.what}" for d in diffs[:50])
        die(f"{args.build_a} vs {args.build_b}: {len(diffs)} artifact(s) differ ({n} compared):\n{lines}")
    print(f"repro: OK, {n} files byte-identical ({args.runner_a} vs {args.runner_b}, PARAMS={args.params}): "
          f"dataset WAVs + clips.jsonl, features.npy + index.jsonl, calib_kws.tar{onnx_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
