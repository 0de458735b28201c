"""device.listen_check: the board's events against the host detector's, on the tone model's build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from device import listen_check
from pipeline.core.cli import run_main
from tests.conftest import write_wav
from tests.device.tiny_model import make_listen_build, write_tones
from tests.eval.conftest import quiet_noise


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_listen_build(tmp_path_factory.mktemp("lc") / "build")


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tones(tmp_path_factory.mktemp("lc-wav") / "tones.wav")


def board_file(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def check(build: Path, wav: Path, board: Path, *extra: str) -> int:
    return run_main(listen_check.main, ["--build", str(build), "--wav", str(wav), "--board-events", str(board), *extra])


def test_the_same_events_pass_and_a_missing_or_late_one_fails(build: Path, tones: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    host, hop = listen_check.host_events(build, tones)
    assert [e["class"] for e in host] == ["ALFA", "BRAVO"]
    same = [{"class": e["class"], "time_s": e["time_s"] + hop} for e in host]   # one hop late is within tolerance
    assert check(build, tones, board_file(tmp_path / "same.jsonl", same), "--min-events", "2") == 0
    assert "board and host agree" in capsys.readouterr().out
    assert check(build, tones, board_file(tmp_path / "one.jsonl", same[:1])) == 1
    assert "classes differ" in capsys.readouterr().out
    late = [dict(same[0]), dict(same[1], time_s=same[1]["time_s"] + 2 * hop)]
    assert check(build, tones, board_file(tmp_path / "late.jsonl", late)) == 1
    assert "more than one hop" in capsys.readouterr().out
    assert check(build, tones, board_file(tmp_path / "same2.jsonl", same), "--min-events", "3") == 1
    assert "would pass on nothing" in capsys.readouterr().out


def test_keyword_free_fails_on_any_board_event_and_model_picks_the_host_model(build: Path, tones: Path,
                                                                              tmp_path: Path) -> None:
    quiet = write_wav(tmp_path / "quiet.wav", quiet_noise(3.0))
    assert check(build, quiet, board_file(tmp_path / "none.jsonl", []), "--keyword-free") == 0
    assert check(build, quiet, board_file(tmp_path / "one.jsonl", [{"class": "ALFA", "time_s": 1.0}]),
                 "--keyword-free") == 1
    other = shutil.copy(build / "model" / "kws.onnx", tmp_path / "int8.onnx")
    host, _ = listen_check.host_events(build, tones, Path(other))
    assert [e["class"] for e in host] == ["ALFA", "BRAVO"]
    assert check(build, tones, board_file(tmp_path / "b.jsonl", host), "--model", str(other), "--min-events", "1") == 0
