"""The espeak-ng cross-speaker holdout: an explicit voice split, keyword-free negatives, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import tts
from pipeline.audio.tts import TRAINING_VOICES, speaker
from pipeline.authoring import demo_seeds
from pipeline.core.cli import run_main
from pipeline.eval import holdout_tts
from pipeline.eval.holdout_tts import (
    EVAL_VOICES,
    KEYWORDS,
    check_voice_split,
    keyword_tokens,
    make_rng,
    negative_text,
    training_voices,
    voice_id,
)
from tests.conftest import require_tool

EVAL_IDS = [voice_id(*v) for v in EVAL_VOICES]


def test_eval_speakers_are_disjoint_from_the_training_speakers() -> None:
    train = training_voices()
    assert train[0] == tts.TRAIN_VOICE and set(TRAINING_VOICES) <= set(train)
    check_voice_split(EVAL_IDS, train)
    assert not {speaker(v) for v in EVAL_IDS} & {speaker(v) for v in train}
    assert len(set(map(speaker, EVAL_IDS))) == len(EVAL_IDS)  # twelve different evaluation speakers
    assert len(set(map(speaker, train))) == len(train)
    assert demo_seeds.WORDS == KEYWORDS and demo_seeds.BACKGROUND_CLASS == holdout_tts.BACKGROUND_CLASS


def test_the_split_check_catches_an_overlap() -> None:
    with pytest.raises(ValueError, match="es-419"):
        check_voice_split([*EVAL_IDS, "ES-419"], [tts.TRAIN_VOICE])
    # the same espeak-ng variant in another language is the same speaker
    with pytest.raises(ValueError, match="'f2'"):
        check_voice_split(EVAL_IDS, ["es-419+F2"])
    assert speaker("es+f3") == speaker("ES-419+f3") == "f3" and speaker("Ana López") == "ana lópez"


def test_every_eval_voice_sounds_different_from_the_training_voice() -> None:
    exe = require_tool("espeak-ng", "apt-get install espeak-ng")

    def say(voice: str) -> bytes:
        cmd = [exe, "-v", voice, "-s", str(demo_seeds.TRAIN_SPEED_WPM), "-p", str(demo_seeds.TRAIN_PITCH), "--stdout", "salir"]
        return subprocess.run(cmd, capture_output=True, check=True).stdout

    reference = say(tts.TRAIN_VOICE)
    for v in EVAL_IDS:
        assert say(v) != reference, f"{v} produces the training voice's audio"


def test_negative_text_never_contains_a_command() -> None:
    for i in range(300):
        text = negative_text(make_rng(1, 7, i), 6)
        assert text and keyword_tokens(text) == []
    assert keyword_tokens("Hay que SALIR, y luego cancelar.") == ["salir", "cancelar"]
    assert keyword_tokens("Salí, repetido, cancelado, principio, continúa") == []


def test_bad_arguments_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h"
    assert run_main(holdout_tts.main, ["--out", str(out), "--voices", tts.TRAIN_VOICE]) == 2
    assert "not an evaluation voice" in capsys.readouterr().err
    assert not out.exists()


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "h"
    assert run_main(holdout_tts.main, ["--out", str(out), "--fondo-minutes", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: espeak-ng") and "apt-get install espeak-ng" in err
    assert not out.exists()


def build(out: Path) -> dict:
    argv = ["--out", str(out), "--voices", "es+f2,es-419+m4", "--renditions", "1", "--fondo-minutes", "0.15",
            "--fondo-file-s", "5", "--noisy-fraction", "0.5", "--seed", "3"]
    assert run_main(holdout_tts.main, argv) == 0
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_holdout_tts_builds_a_small_deterministic_set(tmp_path: Path) -> None:
    require_tool("espeak-ng", "apt-get install espeak-ng")
    doc = build(tmp_path / "a")
    files = doc["files"]
    assert doc["counts"] == {**{k: 2 for k in KEYWORDS}, "FONDO": doc["counts"]["FONDO"]}
    assert doc["fondo_s"] >= 9.0 and doc["counts"]["FONDO"] >= 2
    assert doc["generator"].startswith("eSpeak NG")
    assert doc["eval_voices"] == ["es+f2", "es-419+m4"] and doc["training_voices_excluded"] == training_voices()
    on_disk = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.wav"))
    assert on_disk == sorted(f["path"] for f in files)
    snrs = set()
    for f in files:
        info = sf.info(str(tmp_path / "a" / f["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert f["voice"] in doc["eval_voices"] and f["speed_wpm"] in holdout_tts.SPEEDS_WPM
        assert f["pitch"] in holdout_tts.PITCHES
        if f["class"] == "FONDO":
            assert keyword_tokens(f["text"]) == []
        else:
            assert f["text"] == f["class"].lower() and info.duration >= holdout_tts.CLIP_S
            assert 0 < f["word_start_s"] < f["word_end_s"] <= info.duration
            audio, _ = sf.read(str(tmp_path / "a" / f["path"]))
            a, b = int(f["word_start_s"] * 16000), int(f["word_end_s"] * 16000)
            word_rms, lead_rms = np.sqrt(np.mean(audio[a:b] ** 2)), np.sqrt(np.mean(audio[:a] ** 2))
            assert word_rms > (3.0 if f["snr_db"] is None else 1.2) * lead_rms  # the word is where it says
        snrs.add(f["snr_db"])
    assert None in snrs and snrs - {None} <= {20.0, 10.0, 5.0} and snrs - {None}
    again = build(tmp_path / "b")
    assert [(f["path"], f["sha256"]) for f in again["files"]] == [(f["path"], f["sha256"]) for f in files]


def test_training_development_and_evaluation_speakers_are_three_disjoint_sets() -> None:
    holdout_tts.check_splits()
    dev = [voice_id(*v) for v in holdout_tts.DEV_VOICES]
    assert not {speaker(v) for v in dev} & {speaker(v) for v in EVAL_IDS}
    assert not {speaker(v) for v in dev} & {speaker(v) for v in training_voices()}


def test_dev_split_uses_development_voices_and_texts(tmp_path: Path) -> None:
    from pipeline.audio import texts as dev_texts
    from pipeline.authoring import speech_negatives

    require_tool("espeak-ng", "apt-get install espeak-ng")
    out = tmp_path / "dev"
    argv = ["--split", "dev", "--out", str(out), "--voices", "es+shelby", "--renditions", "1",
            "--fondo-minutes", "0.1", "--fondo-file-s", "6"]
    assert run_main(holdout_tts.main, argv) == 0
    doc = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert doc["params"]["split"] == "dev" and doc["params"]["seed"] == holdout_tts.DEFAULT_SEEDS["dev"]
    assert doc["eval_voices"] == ["es+shelby"]
    fondo_texts = [f["text"] for f in doc["files"] if f["class"] == "FONDO"]
    assert fondo_texts and all(keyword_tokens(t) == [] for t in fondo_texts)
    # the development negatives speak the development texts (neither training nor evaluation texts)
    dev_words = {w for t in (*dev_texts.PHRASES, *dev_texts.NEAR_MISS_WORDS, *dev_texts.SUBJECTS,
                             *dev_texts.VERBS, *dev_texts.OBJECTS, *dev_texts.COMPLEMENTS)
                 for w in speech_negatives.words_of(t)}
    for t in fondo_texts:
        assert set(speech_negatives.words_of(t)) <= dev_words, t
    assert run_main(holdout_tts.main, ["--split", "dev", "--out", str(tmp_path / "x"), "--voices", "es+f2"]) == 2
