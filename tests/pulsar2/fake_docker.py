#!/usr/bin/env python3
"""A stand-in `docker` client for the pulsar2.build tests (no daemon needed).

Environment: FAKE_DOCKER_LOG (JSON lines of argv are appended), FAKE_DOCKER_IMAGES (comma-separated
images that `image inspect` finds), FAKE_DOCKER_RC (exit status of `run ... pulsar2 build`, default 0),
FAKE_DOCKER_NO_OUTPUT=1 (the build writes no axmodel), FAKE_DOCKER_DAEMON_DOWN=1.
`run` maps the `-v HOST:/data/build` mount, reads the config and writes output_dir/output_name: a
"real" (unmarked) file for --entrypoint runs, an EMULATED container for the emulator image.
"""

import json
import os
import sys
from pathlib import Path, PurePosixPath

argv = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a", encoding="utf-8") as f:
    f.write(json.dumps(argv) + "\n")
if os.environ.get("FAKE_DOCKER_DAEMON_DOWN") == "1":
    print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", file=sys.stderr)
    sys.exit(1)
images = [i for i in os.environ.get("FAKE_DOCKER_IMAGES", "").split(",") if i]
if argv[:2] == ["image", "inspect"]:
    if argv[-1] in images:
        print("sha256:" + "ab" * 32)
        sys.exit(0)
    print(f"Error response from daemon: No such image: {argv[-1]}", file=sys.stderr)
    sys.exit(1)
if argv[0] != "run":
    sys.exit(f"fake docker: unsupported {argv}")
if "pulsar2 version" in argv:
    print("version: 4.2\ncommit: 751f68f9")
    sys.exit(0)
host_build = next(a.split(":")[0] for a in argv if a.endswith(":/data/build"))
if "--config" in argv:
    config = argv[argv.index("--config") + 1]
else:
    config = argv[argv.index("pulsar2-build") + 1]
cfg = json.loads((Path(host_build) / PurePosixPath(config).relative_to("/data/build")).read_text())
out = Path(host_build) / PurePosixPath(cfg["output_dir"]).relative_to("/data/build")
out.mkdir(parents=True, exist_ok=True)
print("Building onnx ... 100%")
if os.environ.get("FAKE_DOCKER_NO_OUTPUT") != "1":
    target = out / cfg.get("output_name", "compiled.axmodel")
    if "--entrypoint" in argv:
        target.write_bytes(b"\x00REAL-AXMODEL-BYTES" * 8)
    else:
        sys.path.insert(0, os.environ["FAKE_DOCKER_REPO"])
        from pulsar2 import axmodel
        axmodel.write_emulated(target, b"onnx", {"target_hardware": "AX620E", "npu_mode": "NPU1", "compiler": "pulsar2-emulator 1.0",
                                                 "input": {"name": "input", "shape": [1, 1, 98, 64], "dtype": "float32"},
                                                 "output": {"name": "output", "shape": [1, 4], "dtype": "float32"}})
rc = int(os.environ.get("FAKE_DOCKER_RC", "0"))
if rc:
    print("Traceback (most recent call last):\n  RuntimeError: fake compiler failure")
sys.exit(rc)
