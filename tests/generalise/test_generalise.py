"""Issue 6 item 4 (generalising from one recording): VTLP formant warp, SpecAugment, speech negatives
(and their separation from the held-out evaluation texts and voices)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import augment as A
from pipeline.audio import tts
from pipeline.audio.tts import TRAIN_VOICE
from pipeline.authoring import speech_negatives as SN
from pipeline.core.cli import StageError, run_main
from pipeline.eval import holdout_tts
from pipeline.stages import dataset
from pipeline.stages.train import SpecAugment
from tests.conftest import synthetic_seeds  # noqa: F401  (fixture)

SR = 16000


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spec)])


# ---- FormantWarp (VTLP) ------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.85, 0.9, 1.1, 1.15])
def test_formant_warp_moves_spectral_peaks_by_alpha(alpha: float) -> None:
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = A.formant_warp(x, alpha, SR)
    assert y.shape == x.shape and y.dtype == np.float32
    assert peak_hz(y) == pytest.approx(1000 * alpha, abs=5)
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-3)  # level kept


def test_formant_warp_identity_and_boundary_map() -> None:
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    assert np.array_equal(A.formant_warp(x, 1.0, SR), x)
    f = np.array([0.0, 1000.0, 8000.0])
    for alpha in (0.8, 1.2):
        g = A.warp_frequencies(f, alpha, SR)
        assert g[0] == 0.0 and g[1] == pytest.approx(1000 * alpha) and g[2] == pytest.approx(8000.0)
        dense = A.warp_frequencies(np.linspace(0, 8000, 513), alpha, SR)
        assert np.all(np.diff(dense) > 0)  # monotonic: invertible


def test_formant_warp_sample_respects_probability_and_range() -> None:
    rng = np.random.default_rng(1)
    draws = [A.FormantWarp(0.5, 0.9, 1.1).sample(rng)["alpha"] for _ in range(400)]
    fired = [a for a in draws if a != 1.0]
    assert 150 < len(fired) < 250
    assert all(0.9 <= a <= 1.1 for a in fired)
    assert all(A.FormantWarp(0.0, 0.9, 1.1).sample(rng)["alpha"] == 1.0 for _ in range(50))


def test_dataset_records_and_applies_the_warp(synthetic_seeds: Path, tmp_path: Path) -> None:  # noqa: F811
    smoke = Path(dataset.__file__).parents[1] / "params" / "presets" / "smoke.toml"
    common = ["--params", str(smoke), "--seeds", str(synthetic_seeds), "--per-class", "3", "--fondo-minutes", "0.05",
              "--no-progress", "--workers", "1"]
    assert run_main(dataset.main, [*common, "--out", str(tmp_path / "off")]) == 0
    assert run_main(dataset.main, [*common, "--out", str(tmp_path / "on"), "--p-warp", "1", "--warp-low", "1.1",
                                   "--warp-high", "1.2"]) == 0
    off = [json.loads(s) for s in (tmp_path / "off" / "clips.jsonl").read_text().splitlines()]
    on = [json.loads(s) for s in (tmp_path / "on" / "clips.jsonl").read_text().splitlines()]
    assert all("warp" not in r["params"] for r in off)
    assert all(1.1 <= r["params"]["warp"]["alpha"] <= 1.2 for r in on)  # keyword AND FONDO clips
    assert {r["class"] for r in on} >= {"FONDO", "ALFA"}
    for a, b in zip(off, on, strict=True):  # the warp is drawn last: every other drawn value is unchanged
        assert {k: v for k, v in b["params"].items() if k != "warp"} == a["params"]
    clip = on[0]["path"]
    assert not np.array_equal(sf.read(tmp_path / "off" / clip)[0], sf.read(tmp_path / "on" / clip)[0])
    rc = run_main(dataset.main, [*common, "--out", str(tmp_path / "bad"), "--warp-low", "1.2", "--warp-high", "1.0"])
    assert rc == 2 and not (tmp_path / "bad").exists()


# ---- SpecAugment -------------------------------------------------------------------------------------

def test_spec_augment_masks_whole_rows_and_columns_with_the_clip_mean() -> None:
    x = np.random.default_rng(0).standard_normal((8, 1, 98, 64)).astype(np.float32)
    spec = SpecAugment(1.0, 1, 20, 0, 0)
    y = spec.apply(x, np.random.default_rng(3))
    assert y.shape == x.shape and y.dtype == np.float32
    assert not np.array_equal(x, y) and np.array_equal(x, x.copy())
    for i in range(8):
        changed = (y[i, 0] != x[i, 0])
        rows = changed.any(axis=1)
        assert np.all(changed[rows])  # a time mask covers every mel bin of its frames
        assert rows.sum() <= 20
        assert np.allclose(y[i, 0][rows], x[i].mean())
    freq = SpecAugment(1.0, 0, 0, 2, 8).apply(x, np.random.default_rng(4))
    cols = (freq != x)[:, 0].any(axis=1)  # (b, mels)
    assert np.all(((freq != x)[:, 0]).any(axis=1) == cols) and cols.sum(axis=1).max() <= 16


def test_spec_augment_off_and_reproducible() -> None:
    x = np.random.default_rng(0).standard_normal((4, 1, 98, 64)).astype(np.float32)
    assert not SpecAugment(0.0, 2, 10, 2, 8).active
    assert not SpecAugment(1.0, 0, 10, 2, 0).active
    assert np.array_equal(SpecAugment(0.0, 2, 10, 2, 8).apply(x, np.random.default_rng(1)), x)
    a = SpecAugment(1.0, 2, 10, 2, 8).apply(x, np.random.default_rng([1, 2, 3]))
    b = SpecAugment(1.0, 2, 10, 2, 8).apply(x, np.random.default_rng([1, 2, 3]))
    assert np.array_equal(a, b)


# ---- speech negatives ----------------------------------------------------------------------------------

def _all_texts(module: object) -> list[str]:
    names = ("NEAR_MISS_WORDS", "PHRASES", "SUBJECTS", "VERBS", "OBJECTS", "COMPLEMENTS")
    return [t for n in names for t in getattr(module, n)]


def test_speech_negative_texts_are_disjoint_from_the_evaluation_texts() -> None:
    ours = {SN.fold(t).strip(" .¿?¡!") for t in _all_texts(SN)}
    theirs = {SN.fold(t).strip(" .¿?¡!") for t in _all_texts(holdout_tts)}
    assert not ours & theirs
    # no near-miss word of ours appears anywhere in the evaluation texts, and vice versa
    their_words = {w for t in _all_texts(holdout_tts) for w in SN.words_of(t)}
    our_words = {w for t in _all_texts(SN) for w in SN.words_of(t)}
    assert not {SN.fold(w) for w in SN.NEAR_MISS_WORDS} & their_words
    assert not {SN.fold(w) for w in holdout_tts.NEAR_MISS_WORDS} & our_words


def test_development_texts_are_a_third_disjoint_list() -> None:
    from pipeline.audio import texts as dev_texts

    lists = {"training": SN, "evaluation": holdout_tts, "development": dev_texts}
    for a, b in [("training", "evaluation"), ("training", "development"), ("evaluation", "development")]:
        ta = {SN.fold(t).strip(" .¿?¡!") for t in _all_texts(lists[a])}
        tb = {SN.fold(t).strip(" .¿?¡!") for t in _all_texts(lists[b])}
        assert not ta & tb, (a, b, ta & tb)
        words_a = {w for t in _all_texts(lists[a]) for w in SN.words_of(t)}
        words_b = {w for t in _all_texts(lists[b]) for w in SN.words_of(t)}
        near_a = {w for t in lists[a].NEAR_MISS_WORDS for w in SN.words_of(t)}
        near_b = {w for t in lists[b].NEAR_MISS_WORDS for w in SN.words_of(t)}
        assert not near_a & words_b, (a, b, near_a & words_b)
        assert not near_b & words_a, (b, a, near_b & words_a)
    for t in _all_texts(dev_texts):
        assert SN.keyword_hits(t) == [], t


def test_speech_negatives_contain_no_command_word_and_use_training_voices_only() -> None:
    assert tuple(SN.KEYWORDS) == tuple(holdout_tts.KEYWORDS)
    for t in _all_texts(SN):
        assert SN.keyword_hits(t) == [], t
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert SN.keyword_hits(SN.utterance(rng)) == []
    eval_speakers = {tts.speaker(holdout_tts.voice_id(*v)) for v in holdout_tts.EVAL_VOICES}
    assert SN.default_voices()[0] == TRAIN_VOICE and len(SN.default_voices()) == 1 + len(tts.TRAINING_VOICES)
    assert not {tts.speaker(v) for v in SN.default_voices()} & eval_speakers
    with pytest.raises(StageError, match=r"es-419\+f2"):  # an evaluation speaker is refused, whatever its language
        SN.check_voices(["es-419+m1", "es-419+f2"])
    assert SN.keyword_hits("Quiero salir ya") == ["salir"] and SN.keyword_hits("Salimos ya") == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_speech_negatives_cli_writes_speech_in_every_second(tmp_path: Path) -> None:
    out = tmp_path / "FONDO"
    out.mkdir()
    (out / "keep.wav").write_bytes(b"x")
    assert run_main(SN.main, ["--out", str(out), "--minutes", "0.2", "--file-s", "6"]) == 0
    files = sorted(out.glob(f"{SN.FILE_PREFIX}*.wav"))
    assert len(files) >= 2 and (out / "keep.wav").read_bytes() == b"x"  # other files left alone
    total = 0.0
    for f in files:
        x, sr = sf.read(f, dtype="float32")
        assert sr == SR and x.ndim == 1
        total += x.size / SR
        # every 1 s window the dataset stage could cut holds speech, not a silent gap
        hop = SR // 4
        levels = [np.sqrt(np.mean(x[i: i + SR] ** 2)) for i in range(0, x.size - SR + 1, hop)]
        assert min(levels) > 10 ** (-40 / 20), f.name
    assert total >= 12.0
    again = tmp_path / "again"
    assert run_main(SN.main, ["--out", str(again), "--minutes", "0.2", "--file-s", "6"]) == 0
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in sorted(again.glob("*.wav"))]


def test_speech_negatives_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    assert run_main(SN.main, ["--out", str(tmp_path / "o"), "--minutes", "0"]) == 2
    (tmp_path / "file").write_text("x")
    assert run_main(SN.main, ["--out", str(tmp_path / "file")]) == 2


def test_noise_exclude_keeps_matching_fondo_files_out_of_the_noise_pool(synthetic_seeds: Path) -> None:  # noqa: F811
    fondo = sorted(p.name for p in (synthetic_seeds / "FONDO").glob("*.wav"))
    assert len(fondo) >= 2
    assert dataset.excluded_from_noise(f"FONDO/{fondo[0]}", f"x_*, {fondo[0]}")
    assert not dataset.excluded_from_noise(f"FONDO/{fondo[1]}", f"{fondo[0]}")
    assert not dataset.excluded_from_noise(f"FONDO/{fondo[0]}", "")
    bank, *_ = dataset.load_bank(synthetic_seeds, "")
    smoke = Path(dataset.__file__).parents[1] / "params" / "presets" / "smoke.toml"
    from pipeline.core import params as P

    params = {**P.resolve("dataset", [smoke]), "use_fondo_as_noise": True}
    everything = dataset.make_recipe({**params, "noise_exclude": ""}, bank).noise.sources
    kept = dataset.make_recipe({**params, "noise_exclude": fondo[0]}, bank).noise.sources
    assert len(everything) == len(fondo) and len(kept) == len(fondo) - 1
    assert not any(np.array_equal(k, bank.fondo[0].audio) for k in kept)
    assert dataset.make_recipe({**params, "noise_exclude": "*"}, bank).noise.sources == ()
