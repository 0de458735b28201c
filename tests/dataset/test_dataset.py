"""pipeline.stages.dataset: outputs, manifest, determinism, regeneration from clips.jsonl, bad input, atomicity."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.locate import frame_energy_db
from pipeline.audio.wav import pcm16, read_audio
from pipeline.core.io import sha256_file
from pipeline.stages import dataset
from tests.conftest import tone_word, write_wav
from tests.dataset.conftest import make_seeds

Runner = Callable[..., tuple[int, str]]
SR = 16000


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "clips.jsonl").read_text(encoding="utf-8").splitlines()]


def test_outputs_layout_clips_jsonl_and_manifest(seeds: Path, tmp_path: Path, run_dataset: Runner) -> None:
    (seeds / "ALFA" / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    rc, err = run_dataset(seeds, out, "--per-class", "4", "--fondo-minutes", "0.05")
    assert rc == 0, err
    classes = ["ALFA", "BRAVO", "CHARLIE", "FONDO"]
    counts = {"ALFA": 4, "BRAVO": 4, "CHARLIE": 4, "FONDO": 3}
    for c, n in counts.items():
        names = sorted(p.name for p in (out / c).iterdir())
        assert names == [f"{c.lower()}_{i:05d}.wav" for i in range(n)]
        for name in names:
            info = sf.info(str(out / c / name))
            assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", 16000)
    lines = read_lines(out)
    assert [r["path"] for r in lines] == [f"{c}/{c.lower()}_{i:05d}.wav" for c in classes for i in range(counts[c])]
    for r in lines:
        assert set(r) == {"path", "class", "source", "params"}
        assert r["source"].startswith(r["class"] + "/") and (seeds / r["source"]).is_file()
    kw = [r for r in lines if r["class"] != "FONDO"]
    assert {"word", "tempo", "stretch_rate", "semitones", "shift_ms", "reverb", "noise"} <= set(kw[0]["params"])
    assert {"offset", "gain_db"} <= set(next(r for r in lines if r["class"] == "FONDO")["params"]) <= {"offset", "gain_db", "noise"}

    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "dataset"
    assert m["classes"] == classes and m["background_class"] == "FONDO" and m["counts"] == counts
    assert m["total_clips"] == 15
    assert m["params"]["per_class"] == 4 and m["params"]["seed"] == 1234 and m["params"]["snr_list"] == [20, 10, 5, 0]
    assert {"git", "libraries", "image_id"} <= set(m["provenance"])
    assert all(len(h) == 64 for h in m["inputs"].values()) and len(m["inputs"]) == 7  # 5 seeds, params, clip stamp
    assert m["skipped_non_wav"] == {"count": 1, "files": ["ALFA/notes.txt"]}
    assert "ALFA/notes.txt: not a .wav file; ignored" in err
    words = {s["source"]: s["word"] for s in m["seeds"]}
    assert words["FONDO/000_noise.wav"] is None
    alfa = words["ALFA/000_alfa.wav"]  # tone_word at 0.4 s for 0.45 s
    assert 0.35 < alfa["start_s"] < 0.5 and 0.75 < alfa["end_s"] < 0.9
    assert m["conversions"] == []
    assert m["clips_jsonl_sha256"] == sha256_file(out / "clips.jsonl")
    assert sorted(p.name for p in out.iterdir()) == classes + ["clips.jsonl", "manifest.json"]
    assert not list(tmp_path.glob(".out.*"))  # no temporary directory left behind


def test_same_seed_same_bytes_other_seed_differs(seeds: Path, tmp_path: Path, run_dataset: Runner,
                                                 hashes: Callable[[Path], dict[str, str]]) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert run_dataset(seeds, a, "--workers", "1")[0] == 0
    assert run_dataset(seeds, b, "--workers", "1")[0] == 0
    assert run_dataset(seeds, c, "--workers", "1", "--seed", "99")[0] == 0
    ha, hb, hc = hashes(a), hashes(b), hashes(c)
    assert len(ha) == 3 * 5 + 6 and ha == hb
    assert (a / "clips.jsonl").read_bytes() == (b / "clips.jsonl").read_bytes()
    assert ha.keys() == hc.keys()
    assert sum(ha[k] != hc[k] for k in ha) >= len(ha) - 1


def test_worker_count_does_not_change_the_bytes(seeds: Path, tmp_path: Path, run_dataset: Runner,
                                                hashes: Callable[[Path], dict[str, str]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    # small chunks: several per class, so the two workers interleave
    monkeypatch.setattr(dataset, "CHUNK_CLIPS", 3)
    extra = ("--per-class", "7", "--fondo-minutes", "0.1")
    assert run_dataset(seeds, one, "--workers", "1", *extra)[0] == 0
    assert run_dataset(seeds, two, "--workers", "2", *extra)[0] == 0
    assert hashes(one) == hashes(two)
    assert (one / "clips.jsonl").read_bytes() == (two / "clips.jsonl").read_bytes()


def test_one_clip_regenerated_alone_from_its_line(seeds: Path, tmp_path: Path, run_dataset: Runner) -> None:
    out = tmp_path / "out"
    assert run_dataset(seeds, out, "--p-reverb", "1", "--p-pitch", "1", "--p-stretch", "1")[0] == 0
    m = json.loads((out / "manifest.json").read_text())
    bank, _, _, _ = dataset.load_bank(seeds, m["params"]["rirs_root"], clip_samples=m["clip_samples"])
    recipe = dataset.make_recipe(m["params"], bank, m["clip_samples"])
    lines = read_lines(out)
    for record in (lines[3], lines[7], lines[-1]):  # keyword clips and a FONDO clip
        audio = dataset.render_clip(bank, recipe, json.loads(json.dumps(record)))
        written, _ = sf.read(str(out / record["path"]), dtype="int16")
        np.testing.assert_array_equal(pcm16(audio), written)


def test_the_crop_never_cuts_the_word(tmp_path: Path, run_dataset: Runner) -> None:
    seeds = tmp_path / "seeds"
    make_seeds(seeds)
    # a long word (about 1 s above the locator's threshold) starting right at the beginning of its recording,
    # and a short one near the end
    write_wav(seeds / "DELTA" / "000.wav", tone_word(dur_s=1.5, word_at_s=0.02, word_s=1.25, f0_hz=200))
    write_wav(seeds / "ECHO" / "000.wav", tone_word(dur_s=1.5, word_at_s=1.05, word_s=0.4, f0_hz=330))
    out = tmp_path / "out"
    rc, err = run_dataset(seeds, out, "--per-class", "25", "--p-noise", "0", "--p-reverb", "0", "--p-shift", "1",
                          "--max-shift-ms", "150", "--p-stretch", "1", "--stretch-low", "0.85")
    assert rc == 0, err
    for r in read_lines(out):
        if r["class"] == "FONDO":
            continue
        x, _ = read_audio(out / r["path"])
        level, _, _ = frame_energy_db(x)
        # the first and last 25 ms frames are far below the word's peak: nothing was cut off
        assert max(level[0], level[-1]) < level.max() - 20, r
        if r["class"] == "DELTA":
            assert r["params"]["tempo"] > 1.0  # sped up just enough to fit the window


def test_flags_override_the_params_file_and_fondo_as_noise_switch(seeds: Path, tmp_path: Path,
                                                                  run_dataset: Runner) -> None:
    out = tmp_path / "out"
    rc, err = run_dataset(seeds, out, "--per-class", "3", "--p-noise", "1", "--no-use-fondo-as-noise",
                          "--snr-list", "7,3")
    assert rc == 0, err
    lines = read_lines(out)
    kw = [r for r in lines if r["class"] != "FONDO"]
    assert len(kw) == 9
    assert all(r["params"]["noise"]["kind"] in ("white", "pink", "brown") for r in kw)
    assert {r["params"]["noise"]["snr_db"] for r in kw} <= {7.0, 3.0}
    m = json.loads((out / "manifest.json").read_text())
    assert m["params"]["use_fondo_as_noise"] is False and m["noise"] == "synthetic"
    rc, _ = run_dataset(seeds, tmp_path / "out2", "--per-class", "3", "--p-noise", "1")
    assert all(r["params"]["noise"]["kind"] == "fondo" for r in read_lines(tmp_path / "out2") if r["class"] != "FONDO")


def test_rirs_root_uses_the_given_impulse_responses(seeds: Path, tmp_path: Path, run_dataset: Runner) -> None:
    rirs = tmp_path / "rirs" / "room1"
    h = np.zeros(4000, dtype=np.float32)
    h[50], h[2000] = 0.9, 0.3
    write_wav(rirs / "a.wav", h)
    write_wav(rirs / "b.wav", h[::-1].copy())
    out = tmp_path / "out"
    rc, err = run_dataset(seeds, out, "--p-reverb", "1", "--rirs-root", str(tmp_path / "rirs"))
    assert rc == 0, err
    kinds = {r["params"]["reverb"]["kind"] for r in read_lines(out) if r["class"] != "FONDO"}
    assert kinds == {"file"}
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["rirs"]) == 2 and len(m["inputs"]) == 9
    rc, err = run_dataset(seeds, tmp_path / "o2", "--rirs-root", str(tmp_path / "none"))
    assert rc == 2 and "--rirs-root folder not found" in err


def test_conversions_are_done_and_recorded(seeds: Path, tmp_path: Path, run_dataset: Runner) -> None:
    sr_in = 44100
    x = tone_word(sr=sr_in, dur_s=1.8, word_at_s=0.5, word_s=0.5, f0_hz=240)
    write_wav(seeds / "BRAVO" / "001_stereo.wav", np.stack([x, 0.5 * x], axis=1), sr=sr_in, subtype="PCM_24")
    write_wav(seeds / "CHARLIE" / "001_float.wav", tone_word(f0_hz=300, seed=3), subtype="FLOAT")
    out = tmp_path / "out"
    rc, err = run_dataset(seeds, out)
    assert rc == 0, err
    conv = {c["path"]: c for c in json.loads((out / "manifest.json").read_text())["conversions"]}
    assert set(conv) == {"BRAVO/001_stereo.wav", "CHARLIE/001_float.wav"}
    assert conv["BRAVO/001_stereo.wav"]["channels_in"] == 2 and "44100 Hz -> 16000 Hz" in conv["BRAVO/001_stereo.wav"]["steps"]
    assert "FLOAT -> float32" in conv["CHARLIE/001_float.wav"]["steps"]
    assert "001_stereo.wav: converted" in err
    assert {r["source"] for r in read_lines(out)} >= {"BRAVO/001_stereo.wav", "CHARLIE/001_float.wav"}


def test_a_background_recording_shorter_than_a_clip_is_looped_with_a_warning(seeds: Path, tmp_path: Path,
                                                                            run_dataset: Runner) -> None:
    rc, err = run_dataset(seeds, tmp_path / "out")   # FONDO/001_hum.wav is 0.7 s, the clips 1 s
    assert rc == 0, err
    assert "001_hum.wav: background recording of 0.70 s, shorter than a clip (1.00 s): its clips loop it" in err
    assert "000_noise.wav: background recording" not in err


def test_clips_are_as_long_as_the_features_window(seeds: Path, tmp_path: Path, run_dataset: Runner) -> None:
    clip = tmp_path / "clip.json"
    clip.write_text(json.dumps({"stage": "clip", "params": {"clip_samples": 24000, "sample_rate": 16000}}))
    out = tmp_path / "out"
    rc, err = run_dataset(seeds, out, "--per-class", "3", "--fondo-minutes", "0.05", "--clip", str(clip))
    assert rc == 0, err
    assert json.loads((out / "manifest.json").read_text())["clip_samples"] == 24000
    assert {sf.info(str(out / r["path"])).frames for r in read_lines(out)} == {24000}
    clip.write_text(json.dumps({"stage": "clip", "params": {"clip_samples": 24000, "sample_rate": 8000}}))
    rc, err = run_dataset(seeds, tmp_path / "o2", "--clip", str(clip))
    assert rc != 0 and "the features want 8000 Hz clips" in err


def _corrupt(seeds: Path) -> str:
    (seeds / "ALFA" / "001_bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return r"ALFA/001_bad\.wav: unreadable or corrupt audio .*re-export it"


def _empty(seeds: Path) -> str:
    write_wav(seeds / "BRAVO" / "001_empty.wav", np.zeros(0, dtype=np.float32))
    return r"BRAVO/001_empty\.wav: the file holds no audio.*record it again"


def _silent(seeds: Path) -> str:
    write_wav(seeds / "BRAVO" / "002_silent.wav", np.zeros(SR * 2, dtype=np.float32))
    return r"BRAVO/002_silent\.wav: all silent.*record the word again"


def _silent_fondo(seeds: Path) -> str:
    write_wav(seeds / "FONDO" / "009_zero.wav", np.zeros(SR * 2, dtype=np.float32))
    return r"FONDO/009_zero\.wav: background recording is all silent"


def _no_wavs(seeds: Path) -> str:
    (seeds / "DELTA").mkdir()
    (seeds / "DELTA" / "readme.txt").write_text("x")
    return r"seeds/DELTA: class folder has no \.wav files; put at least one recording of the word DELTA"


def _one_keyword(seeds: Path) -> str:
    shutil.rmtree(seeds / "BRAVO")
    shutil.rmtree(seeds / "CHARLIE")
    return r"1 keyword class folder\(s\) \(ALFA\); add at least 2 folders"


def _no_fondo(seeds: Path) -> str:
    shutil.rmtree(seeds / "FONDO")
    return r"seeds: no FONDO/ folder; add .*FONDO/ with background recordings"


def _long_multiword(seeds: Path) -> str:
    x = tone_word(dur_s=11.0, word_at_s=1.0, word_s=0.5)
    x += tone_word(dur_s=11.0, word_at_s=5.0, word_s=0.5, seed=4, f0_hz=180)
    write_wav(seeds / "CHARLIE" / "001_take.wav", x)
    return r"CHARLIE/001_take\.wav: 11\.0 s long with 2 separate words .*split it into one file per word"


def _truncated(seeds: Path) -> str:
    path = write_wav(seeds / "ALFA" / "004_cut.wav", tone_word(dur_s=1.5, word_at_s=0.4, word_s=0.5))
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 3])  # the header still claims all of it
    return r"ALFA/004_cut\.wav: truncated: its header says \d+ bytes of audio, the file holds \d+.*copy or export it again"


def _clipped(seeds: Path) -> str:
    x = np.clip(8.0 * tone_word(dur_s=1.5, word_at_s=0.4, word_s=0.5), -1.0, 1.0)
    write_wav(seeds / "ALFA" / "003_loud.wav", x)
    return r"ALFA/003_loud\.wav: clipped \(\d+ samples at full scale.*input gain lower"


def _word_too_long(seeds: Path) -> str:
    write_wav(seeds / "ALFA" / "002_slow.wav", tone_word(dur_s=3.0, word_at_s=0.3, word_s=2.2))
    return r"ALFA/002_slow\.wav: the word is .* too long for a 1 s clip"


@pytest.mark.parametrize("breakage", [_corrupt, _empty, _silent, _silent_fondo, _no_wavs, _one_keyword, _no_fondo,
                                      _long_multiword, _truncated, _clipped, _word_too_long])
def test_bad_input_is_one_clear_error_and_the_old_output_survives(
        breakage: Callable[[Path], str], seeds: Path, tmp_path: Path, run_dataset: Runner,
        hashes: Callable[[Path], dict[str, str]]) -> None:
    out = tmp_path / "out"
    assert run_dataset(seeds, out)[0] == 0
    before = hashes(out)
    manifest_before = (out / "manifest.json").read_bytes()
    pattern = breakage(seeds)
    rc, err = run_dataset(seeds, out)
    assert rc == 2
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(error_lines) == 1, err
    assert re.search(pattern, error_lines[0]), error_lines[0]
    assert "Traceback" not in err
    assert hashes(out) == before and (out / "manifest.json").read_bytes() == manifest_before
    assert not list(tmp_path.glob(".out.*"))


def test_missing_seeds_folder(tmp_path: Path, run_dataset: Runner) -> None:
    rc, err = run_dataset(tmp_path / "nowhere", tmp_path / "out")
    assert rc == 2 and "seeds folder not found" in err and not (tmp_path / "out").exists()


def test_a_failure_while_writing_clips_leaves_the_old_output(seeds: Path, tmp_path: Path, run_dataset: Runner,
                                                             hashes: Callable[[Path], dict[str, str]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    assert run_dataset(seeds, out)[0] == 0
    before = hashes(out)
    calls = {"n": 0}
    real = dataset.render_clip

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 7:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "render_clip", flaky)
    with pytest.raises(OSError, match="simulated"):
        run_dataset(seeds, out, "--seed", "5", "--workers", "1")
    assert hashes(out) == before
    assert not list(tmp_path.glob(".out.*"))


def test_invalid_flag_values_are_refused(seeds: Path, tmp_path: Path, run_dataset: Runner) -> None:
    rc, err = run_dataset(seeds, tmp_path / "o", "--p-shift", "1.5")
    assert rc == 2 and "p_shift (--p-shift): 1.5 is greater than the maximum of 1" in err
    rc, err = run_dataset(seeds, tmp_path / "o", "--stretch-low", "1.2", "--stretch-high", "1.0")
    assert rc == 2 and "--stretch-low 1.2 is above --stretch-high 1.0" in err
    assert not (tmp_path / "o").exists()




@pytest.mark.parametrize("offset", [0.05, 0.1, -0.1])
def test_a_dc_offset_is_removed_and_the_word_found_as_without_it(tmp_path: Path, offset: float) -> None:
    from pipeline.audio.locate import locate_word
    from pipeline.audio.wav import read_audio

    clean = tone_word(dur_s=1.5, word_at_s=0.4, word_s=0.585)
    plain = write_wav(tmp_path / "plain.wav", clean)
    shifted = write_wav(tmp_path / "dc.wav", clean + np.float32(offset))
    audio, conv = read_audio(shifted)
    assert any(step.startswith("DC offset") for step in conv.steps)
    want, got = locate_word(read_audio(plain)[0]), locate_word(audio)
    assert abs(got.start - want.start) <= 160 and abs(got.end - want.end) <= 160  # within 10 ms
