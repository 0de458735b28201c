"""The real-image path of pulsar2.build against a real Docker daemon, with a fake "vendor" image.

The fake image has a `pulsar2` that writes output_dir/output_name as root, like the vendor tool; the
test checks the exact docker invocation works end to end: mount at /data/build, config path, exit status,
the chown of root-owned outputs back to the invoking uid/gid, the log and the manifest.
Needs a Docker daemon (`invoke docker.start`) and the local base image (`invoke images.base`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pulsar2 import axmodel, build, choice

BASE = "kws-base:bookworm"
FAKE_PULSAR2 = r"""#!/bin/sh
set -e
case "$1" in
  version) echo "version: 0.0-test"; echo "commit: deadbeef" ;;
  build)
    out=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["output_dir"] + "/" + c.get("output_name", "compiled.axmodel"))' "$3")
    mkdir -p "$(dirname "$out")" "$(dirname "$out")/quant"
    printf 'FAKE-REAL-AXMODEL' > "$out"
    echo "fake vendor pulsar2: wrote $out as $(id -u)" ;;
  *) exit 3 ;;
esac
"""


def _docker_ready() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client: apt-get install docker.io")
    if subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("no Docker daemon: start one with `invoke docker.start`")
    if subprocess.run([docker, "image", "inspect", BASE], capture_output=True, timeout=60).returncode != 0:
        pytest.skip(f"no {BASE} image: build it with `invoke images.base`")
    return docker


@pytest.mark.docker
def test_real_path_runs_the_image_and_chowns_outputs(config_path: Path, build_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    docker = _docker_ready()
    tag = f"kws-test-fake-pulsar2:{uuid.uuid4().hex[:12]}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "pulsar2").write_text(FAKE_PULSAR2, encoding="utf-8")
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nCOPY pulsar2 /usr/local/bin/pulsar2\nRUN chmod 0755 /usr/local/bin/pulsar2\n",
                                    encoding="utf-8")
    r = subprocess.run([docker, "build", "-q", "-t", tag, str(ctx)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert r.returncode == 0, r.stderr
    try:
        monkeypatch.setattr(build.os, "getuid", lambda: 4321)
        monkeypatch.setattr(build.os, "getgid", lambda: 4322)
        stamp = build_dir / "stamps" / "pulsar2.json"
        assert choice.main(["--runner", "docker", "--image", tag, "--image-origin", "command line", "--out", str(stamp)]) == 0
        rc = build.main(["--config", str(config_path), "--build", str(build_dir),
                         "--out", str(build_dir / "pulsar2" / "output" / "compiled.axmodel"), "--choice", str(stamp)])
        assert rc == 0
        out = build_dir / "pulsar2" / "output"
        axm = out / "compiled.axmodel"
        assert axm.read_bytes() == b"FAKE-REAL-AXMODEL" and not axmodel.is_emulated(axm)
        for p in (axm, out / "quant"):
            st = p.stat()
            assert (st.st_uid, st.st_gid) == (4321, 4322), f"{p} still owned by {st.st_uid}:{st.st_gid}"
        assert "fake vendor pulsar2: wrote /data/build/pulsar2/output/compiled.axmodel as 0" in (out / "build.log").read_text()
        man = json.loads((out / "manifest.json").read_text())
        assert man["emulated"] is False and man["compiler"] == {"name": "pulsar2", "version": "0.0-test deadbeef"}
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=120)
