"""pipeline.authoring.demo_seeds: the committed demo seed set is what the generator makes, and it is usable."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.audio.locate import locate_word
from pipeline.audio.wav import load_audio
from pipeline.authoring import demo_seeds
from pipeline.core.cli import run_main
from pipeline.stages import dataset
from tests.conftest import ROOT, require_tool

WORDS = demo_seeds.read_words(demo_seeds.DEMO_WORDS).commands

torch.set_num_threads(1)
COMMITTED = ROOT / "data" / "demo-seeds"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("espeak-ng", "apt-get install espeak-ng")
    out = tmp_path_factory.mktemp("demo") / "demo-seeds"
    assert run_main(demo_seeds.main, ["--out", str(out)]) == 0
    return out


def test_generated_set_layout_and_format(generated: Path) -> None:
    assert sorted(p.name for p in generated.iterdir() if p.is_dir()) == sorted([*WORDS, "FONDO"])
    for word in WORDS:
        path = generated / word / f"000_{word.lower()}.wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.5 <= info.duration <= 2.0
        span = locate_word(load_audio(path))
        # the word sits inside the recording with quiet room noise around it
        assert 0.3 < span.start / 16000 < 0.5 and span.end / 16000 < info.duration - 0.2
        assert span.peak_dbfs - span.floor_dbfs > 30
    fondo = sorted((generated / "FONDO").glob("0*.wav"))
    assert [p.stem.split("_", 1)[1] for p in fondo] == ["brown_noise", "pink_noise", "mains_hum", "fan_noise"]
    speech = sorted((generated / "FONDO").glob("speech_neg_*.wav"))  # keyword-free talk (pipeline.authoring.speech_negatives)
    assert speech and sum(sf.info(str(p)).duration for p in speech) >= 60 * demo_seeds.SPEECH_NEG_MINUTES
    for p in fondo:
        x = load_audio(p)
        assert x.size == 4 * 16000 and 0.005 < float(np.sqrt(np.mean(x * x))) < 0.3
    hum = load_audio(generated / "FONDO" / "002_mains_hum.wav")
    spec = np.abs(np.fft.rfft(hum))
    assert abs(np.argmax(spec) * 16000 / hum.size - 50.0) < 1.0  # mains fundamental
    readme = (generated / "README.md").read_text()
    assert demo_seeds.TRAIN_VOICE in readme and "espeak-ng" in readme and "-s" in readme


def test_generator_is_deterministic_and_matches_the_committed_set(generated: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert run_main(demo_seeds.main, ["--out", str(again)]) == 0
    files = sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((generated / f).read_bytes() == (again / f).read_bytes() for f in files)
    committed_version = re.search(r"Synthesiser: `([^`]*)`", (COMMITTED / "README.md").read_text())
    this_version = re.search(r"Synthesiser: `([^`]*)`", (generated / "README.md").read_text())
    assert committed_version and this_version
    if committed_version.group(1) != this_version.group(1):
        pytest.skip(f"espeak-ng here ({this_version.group(1)}) differs from the one that made data/demo-seeds")
    assert sorted(p.relative_to(COMMITTED) for p in COMMITTED.rglob("*") if p.is_file()) == files
    assert all((COMMITTED / f).read_bytes() == (generated / f).read_bytes() for f in files)


def test_committed_set_is_small_and_valid_dataset_input() -> None:
    total = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert total < 3.5e6  # ~1 MB of words and noises + ~1.9 MB of speech negatives
    bank, conversions, skipped, _ = dataset.load_bank(COMMITTED, "")
    assert bank.classes == tuple(sorted([*WORDS, "FONDO"]))
    assert conversions == [] and skipped == []
    assert all(s.word is not None and s.word.length < 0.92 * 16000 for w in WORDS for s in bank.seeds[w])


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    rc = run_main(demo_seeds.main, ["--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "espeak-ng: not found" in err and "apt-get install espeak-ng" in err
    assert not (tmp_path / "x").exists()
