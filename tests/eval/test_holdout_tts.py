"""The espeak-ng development and evaluation sets: explicit voice splits, the seeds' commands, keyword-free talk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import texts, tts
from pipeline.audio.tts import check_voice_split, speaker, split_voices, training_voices
from pipeline.authoring import demo_seeds
from pipeline.core.cli import run_main
from pipeline.core.vocabulary import Vocabulary, read_vocabulary
from pipeline.eval import holdout_tts
from tests.conftest import ROOT, require_tool

EVAL_IDS = split_voices("eval")
DEMO = read_vocabulary(ROOT / "data" / "demo-seeds")


def test_eval_speakers_are_disjoint_from_the_training_speakers() -> None:
    train = training_voices()
    assert train[0] == tts.TRAIN_VOICE and len(train) == 1 + len(tts.TRAINING_VARIANTS)
    check_voice_split(EVAL_IDS, train)
    assert not {speaker(v) for v in EVAL_IDS} & {speaker(v) for v in train}
    assert len(set(map(speaker, EVAL_IDS))) == len(EVAL_IDS) == 12  # twelve different evaluation speakers
    assert len(set(map(speaker, train))) == len(train)


def test_the_split_check_catches_an_overlap() -> None:
    with pytest.raises(ValueError, match="es-419"):
        check_voice_split([*EVAL_IDS, "ES-419"], [tts.TRAIN_VOICE])
    # the same espeak-ng variant in another language is the same speaker
    with pytest.raises(ValueError, match="'f2'"):
        check_voice_split(EVAL_IDS, ["es-419+F2"])
    assert speaker("es+f3") == speaker("ES-419+f3") == "f3" and speaker("Ana López") == "ana lópez"


def test_every_installed_variant_is_in_exactly_one_list() -> None:
    """New espeak-ng variants must be placed on purpose (training, development, evaluation, or not a person)."""
    exe = require_tool("espeak-ng", "apt-get install espeak-ng")
    out = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    installed = {line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if line.strip()}
    lists = [tts.TRAINING_VARIANTS, [v for _, v in tts.DEV_VOICES], [v for _, v in tts.EVAL_VOICES], tts.NOT_A_PERSON]
    placed = [v for lst in lists for v in lst]
    assert len(placed) == len(set(placed)) and set(placed) == installed


def test_every_eval_voice_sounds_different_from_the_training_voice() -> None:
    exe = require_tool("espeak-ng", "apt-get install espeak-ng")

    def say(voice: str) -> bytes:
        cmd = [exe, "-v", voice, "-s", str(demo_seeds.TRAIN_SPEED_WPM), "-p", str(demo_seeds.TRAIN_PITCH), "--stdout", "salir"]
        return subprocess.run(cmd, capture_output=True, check=True).stdout

    reference = say(tts.TRAIN_VOICE)
    for v in EVAL_IDS:
        assert say(v) != reference, f"{v} produces the training voice's audio"


def test_bad_arguments_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h"
    seeds = ["--seeds", str(ROOT / "data" / "demo-seeds")]
    assert run_main(holdout_tts.main, [*seeds, "--out", str(out), "--voices", tts.TRAIN_VOICE]) == 2
    assert "not an evaluation voice" in capsys.readouterr().err
    assert run_main(holdout_tts.main, ["--out", str(out)]) == 2
    assert "give the commands: --vocabulary FILE" in capsys.readouterr().err
    assert not out.exists()


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "h"
    assert run_main(holdout_tts.main, ["--seeds", str(ROOT / "data" / "demo-seeds"), "--out", str(out),
                                       "--fondo-minutes", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: espeak-ng") and "apt-get install espeak-ng" in err
    assert not out.exists()


def write_vocabulary(path: Path, vocab: Vocabulary) -> Path:
    path.write_text(json.dumps(vocab.as_dict()), encoding="utf-8")
    return path


def build(out: Path, vocab_file: Path) -> dict:
    argv = ["--vocabulary", str(vocab_file), "--out", str(out), "--voices", "es+f2,es-419+m4", "--renditions", "1",
            "--fondo-minutes", "0.15", "--fondo-file-s", "5", "--noisy-fraction", "0.5", "--seed", "3"]
    assert run_main(holdout_tts.main, argv) == 0
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_holdout_tts_builds_a_small_deterministic_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("espeak-ng", "apt-get install espeak-ng")
    vocab_file = write_vocabulary(tmp_path / "vocabulary.json", DEMO)
    doc = build(tmp_path / "a", vocab_file)
    files = doc["files"]
    assert doc["counts"] == {**{k: 2 for k in DEMO.commands}, "FONDO": doc["counts"]["FONDO"]}
    assert doc["fondo_s"] >= 9.0 and doc["counts"]["FONDO"] >= 2
    assert doc["generator"].startswith("eSpeak NG") and doc["vocabulary"] == DEMO.as_dict()
    assert doc["eval_voices"] == ["es+f2", "es-419+m4"] and doc["training_voices_excluded"] == training_voices()
    assert doc["near_misses"] == texts.near_misses(DEMO, "eval")
    on_disk = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.wav"))
    assert on_disk == sorted(f["path"] for f in files)
    snrs = set()
    for f in files:
        info = sf.info(str(tmp_path / "a" / f["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert f["voice"] in doc["eval_voices"] and f["speed_wpm"] in holdout_tts.SPEEDS_WPM
        assert f["pitch"] in holdout_tts.PITCHES
        if f["class"] == "FONDO":
            assert DEMO.hits(f["text"]) == []
        else:
            assert f["text"] == DEMO.words[f["class"]] and info.duration >= holdout_tts.CLIP_S
            assert 0 < f["word_start_s"] < f["word_end_s"] <= info.duration
            audio, _ = sf.read(str(tmp_path / "a" / f["path"]))
            a, b = int(f["word_start_s"] * 16000), int(f["word_end_s"] * 16000)
            word_rms, lead_rms = np.sqrt(np.mean(audio[a:b] ** 2)), np.sqrt(np.mean(audio[:a] ** 2))
            assert word_rms > (3.0 if f["snr_db"] is None else 1.2) * lead_rms  # the word is where it says
        snrs.add(f["snr_db"])
    assert None in snrs and snrs - {None} <= {20.0, 10.0, 5.0} and snrs - {None}
    again = build(tmp_path / "b", vocab_file)
    assert [(f["path"], f["sha256"]) for f in again["files"]] == [(f["path"], f["sha256"]) for f in files]
    monkeypatch.setattr(holdout_tts.os, "cpu_count", lambda: 1)  # files are made in threads: one thread, same set
    alone = build(tmp_path / "c", vocab_file)
    assert [(f["path"], f["sha256"]) for f in alone["files"]] == [(f["path"], f["sha256"]) for f in files]


def test_another_language_and_other_commands(tmp_path: Path) -> None:
    """Three English commands: the sets say them with English voices of the same speakers."""
    require_tool("espeak-ng", "apt-get install espeak-ng")
    vocab = Vocabulary(language="en", words={"LIGHTS_ON": "lights on", "STOP": "stop", "MUSIC": "play music"})
    out = tmp_path / "en"
    argv = ["--vocabulary", str(write_vocabulary(tmp_path / "v.json", vocab)), "--out", str(out),
            "--voices", "en+f2", "--renditions", "1", "--fondo-minutes", "0.1", "--fondo-file-s", "6"]
    assert run_main(holdout_tts.main, argv) == 0
    doc = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["FONDO", "LIGHTS_ON", "MUSIC", "STOP"]
    assert {f["text"] for f in doc["files"] if f["class"] != "FONDO"} == {"lights on", "stop", "play music"}
    assert all(vocab.hits(f["text"]) == [] for f in doc["files"] if f["class"] == "FONDO")


def test_dev_split_uses_development_voices_and_texts(tmp_path: Path) -> None:
    require_tool("espeak-ng", "apt-get install espeak-ng")
    out = tmp_path / "dev"
    argv = ["--seeds", str(ROOT / "data" / "demo-seeds"), "--split", "dev", "--out", str(out), "--voices", "es+shelby",
            "--renditions", "1", "--dev-fondo-minutes", "0.1", "--fondo-minutes", "5", "--fondo-file-s", "6"]
    assert run_main(holdout_tts.main, argv) == 0
    doc = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert doc["params"]["split"] == "dev" and doc["params"]["seed"] == holdout_tts.DEFAULT_SEEDS["dev"]
    # the development talk has its own length (the evaluation's 5 minutes are not made)
    assert doc["params"]["fondo_minutes"] == 0.1 and 6 <= doc["fondo_s"] < 20
    assert doc["eval_voices"] == ["es+shelby"]
    fondo_texts = [f["text"] for f in doc["files"] if f["class"] == "FONDO"]
    assert fondo_texts and all(DEMO.hits(t) == [] for t in fondo_texts)
    # the development negatives speak the development corpus and near misses (neither training nor evaluation)
    allowed = texts.corpus_words("dev") | set(texts.near_misses(DEMO, "dev"))
    for t in fondo_texts:
        assert set(texts.words_of(t)) <= allowed, t
    assert run_main(holdout_tts.main, ["--seeds", str(ROOT / "data" / "demo-seeds"), "--split", "dev",
                                       "--out", str(tmp_path / "x"), "--voices", "es+f2"]) == 2
