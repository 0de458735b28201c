"""The deploy bundle: content-hash id, refusals that name the file and the fix, the archive."""

from __future__ import annotations

import hashlib
import tarfile

import pytest

from device.bundle import SUMS_NAME, collect_bundle, write_archive
from device.ssh import DeviceError, check_remote_root
from tests.device.tiny_model import make_build


def test_bundle_id_is_a_content_hash(tmp_path):
    a = collect_bundle(make_build(tmp_path / "a", n_inputs=3))
    b = collect_bundle(make_build(tmp_path / "b", n_inputs=3))
    assert a.bundle_id == b.bundle_id and len(a.bundle_id) == 16  # same bytes, other folder: same id
    assert a.bundle_id == hashlib.sha256(a.sums_text.encode()).hexdigest()[:16]
    assert a.emulated and a.ids == ["0", "1", "2"] and a.input_shape == (1, 1, 98, 64)
    (tmp_path / "b" / "npu_inputs" / "labels.csv").write_text("k,i,path,class,label\n0,1,x,ACOPLAR,0\n"
                                                              "1,1,x,ACOPLAR,0\n2,1,x,AVANZAR,1\n")
    assert collect_bundle(tmp_path / "b").bundle_id != a.bundle_id


def test_archive_holds_every_file_and_the_sums(tmp_path):
    bundle = collect_bundle(make_build(tmp_path / "a", n_inputs=2))
    path, digest, size = write_archive(bundle, tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and path.stat().st_size == size
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        sums = tar.extractfile(f"{bundle.bundle_id}/{SUMS_NAME}").read().decode()
    assert names == {f"{bundle.bundle_id}/{rel}" for rel in bundle.files} | {f"{bundle.bundle_id}/{SUMS_NAME}"}
    assert sums == bundle.sums_text and "  model/compiled.axmodel\n" in sums


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda b: (b / "pulsar2/output/compiled.axmodel").unlink(), "make axmodel"),
    (lambda b: (b / "npu_inputs/input/1/input.bin").write_bytes(b"\0" * 100), "100 bytes, expected 25088"),
    (lambda b: (b / "npu_inputs/input/1/input.bin").unlink(), "make npu-inputs"),
    (lambda b: (b / "npu_inputs/list.txt").write_bytes(b"0\n1\n../etc\n"), "not plain folder names"),
    (lambda b: (b / "npu_inputs/list.txt").write_bytes(b"0\n7\n"), "make npu-inputs"),
    (lambda b: (b / "npu_inputs/labels.csv").write_text("k,i\n0,1\n"), "lack"),
])
def test_bad_artifacts_are_refused_with_the_fix(tmp_path, breakage, message):
    build = make_build(tmp_path / "b", n_inputs=2)
    breakage(build)
    with pytest.raises(DeviceError, match=message.replace(".", r"\.")):
        collect_bundle(build)


def test_remote_root_is_normalised():
    assert check_remote_root("/opt//kws/./x/") == "/opt/kws/x"
    assert check_remote_root("/tmp/it's a \"dir\"") == "/tmp/it's a \"dir\""
