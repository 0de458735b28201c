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
from pipeline.audio import texts, tts
from pipeline.audio.tts import TRAIN_VOICE
from pipeline.authoring import speech_negatives as SN
from pipeline.core.cli import StageError, run_main
from pipeline.core.vocabulary import Vocabulary, fold, read_vocabulary
from pipeline.stages import dataset
from pipeline.stages.train import SpecAugment
from tests.conftest import ROOT, synthetic_seeds  # noqa: F401  (fixture)

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


@pytest.mark.parametrize("alpha", [0.85, 1.15])
@pytest.mark.parametrize(("rate", "semitones"), [(1.0, 0.0), (1.1, 0.0), (1.0, 2.0)])
def test_synthesis_warps_formants_like_the_standalone_warp(alpha: float, rate: float, semitones: float) -> None:
    # a keyword clip gets tempo, pitch and the formant warp from one synthesis pass: a partial at f comes out
    # at f * alpha * the pitch ratio, the same place as synthesis then formant_warp puts it
    t = np.arange(2 * SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    sp = A.analyse(x)
    one_pass = A.synthesise(sp, 4000.0, rate, semitones, SR, alpha, SR)
    two_pass = A.formant_warp(A.synthesise(sp, 4000.0, rate, semitones, SR), alpha, SR)
    expected = 1000 * alpha * A.pitch_ratio(semitones)
    assert peak_hz(one_pass) == pytest.approx(expected, abs=5)
    assert peak_hz(two_pass) == pytest.approx(expected, abs=5)
    assert np.sqrt(np.mean(one_pass[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


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
    # the warp is drawn after everything else a keyword clip draws, and after a background clip's crop and gain
    # (its room noise comes later): every value drawn before it is unchanged
    later = {"warp", "noise"}
    for a, b in zip(off, on, strict=True):
        if a["class"] == "FONDO":
            assert {k: v for k, v in b["params"].items() if k not in later} == \
                {k: v for k, v in a["params"].items() if k not in later}
        else:
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

VOCABULARIES = [
    read_vocabulary(ROOT / "data" / "demo-seeds"),
    Vocabulary(language="es", words={"LUZ": "enciende la luz", "PARA": "para", "MUSICA": "pon música"}),
    Vocabulary(language="en", words={"ON": "lights on", "STOP": "stop", "PLAY": "play music"}),
]


def _sentences(split: str) -> set[str]:
    c = texts.CORPORA[split]
    return {fold(s).strip(" .¿?¡!") for s in (*c.phrases, *c.subjects, *c.verbs, *c.objects, *c.complements)}


def test_the_three_corpora_and_their_near_misses_are_disjoint() -> None:
    pairs = [("train", "eval"), ("train", "dev"), ("eval", "dev")]
    for a, b in pairs:
        assert not _sentences(a) & _sentences(b), (a, b, _sentences(a) & _sentences(b))
    for vocab in VOCABULARIES:
        near = {s: set(texts.near_misses(vocab, s)) for s in texts.SPLITS}
        for a, b in pairs:
            assert not near[a] & near[b], (vocab.words, a, b, near[a] & near[b])
            # no near miss of one split is a word anywhere in another split's texts
            assert not near[a] & texts.corpus_words(b) and not near[b] & texts.corpus_words(a), (vocab.words, a, b)
        for s in texts.SPLITS:
            assert all(vocab.hits(w) == [] for w in near[s]), near[s]


def test_near_misses_derive_from_the_commands() -> None:
    demo = VOCABULARIES[0]
    train = texts.near_misses(demo, "train")
    assert {"salamos", "cancelamos", "continuamos"} <= set(train)  # the stem ("sal", not "sali") + an ending
    assert "salimos" not in train and "acopl" in train  # not a list of real words; the first 60 %
    # the inflections people say in ordinary talk: persons, tenses, plural participles, the present participle
    assert {"cancelados", "acopladas", "continuante", "repetaste", "salemos", "repetaria"} <= set(train)
    assert {"cancelado", "continuando"} <= set(texts.near_misses(demo, "eval"))
    # short words get no near misses of their own; commands in another language get theirs
    assert not any(w.startswith("on") for w in texts.near_misses(VOCABULARIES[2], "train"))
    assert texts.near_misses(VOCABULARIES[2], "train")


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_the_development_near_misses_are_as_near_as_the_evaluations() -> None:
    # the detector is calibrated on the development talk: farther near misses there than in the evaluation's
    # let the evaluation's nearest through
    assert _edit_distance("acoplar", "acopla") == 1 and _edit_distance("salir", "salu") == 2
    for vocab in VOCABULARIES:
        nearest = {s: [min(_edit_distance(m, w) for m in texts.near_misses(vocab, s))
                       for w in sorted(vocab.command_words()) if len(w) >= texts.MIN_WORD_LETTERS]
                   for s in ("dev", "eval")}
        assert all(d <= e + 1 for d, e in zip(nearest["dev"], nearest["eval"], strict=True)), (vocab.words, nearest)
        assert sum(nearest["dev"]) <= sum(nearest["eval"]) + 1, (vocab.words, nearest)


def test_negative_text_never_contains_a_command() -> None:
    for vocab in VOCABULARIES:
        for split in texts.SPLITS:
            for i in range(60):
                text = texts.negative_text(np.random.default_rng([1, i]), split, vocab, 6)
                assert text and vocab.hits(text) == [], (split, text)
    demo = VOCABULARIES[0]
    assert demo.hits("Hay que SALIR, y luego cancelar.") == ["salir", "cancelar"]
    assert demo.hits("Salí, repetido, cancelado, principio, continúa") == []
    # a command made of ordinary words: sentences holding them are drawn again, never kept
    common = Vocabulary(language="es", words={"A": "a", "B": "e"})  # in nearly every word
    with pytest.raises(ValueError, match="too common words"):
        texts.negative_text(np.random.default_rng(0), "train", common, 3)


def test_speech_negatives_use_training_voices_only() -> None:
    eval_speakers = {tts.speaker(v) for v in tts.split_voices("eval")}
    assert SN.default_voices()[0] == TRAIN_VOICE and len(SN.default_voices()) == 1 + len(tts.TRAINING_VARIANTS)
    assert not {tts.speaker(v) for v in SN.default_voices()} & eval_speakers
    with pytest.raises(StageError, match=r"es-419\+f2"):  # an evaluation speaker is refused, whatever its language
        SN.check_voices(["es-419+m1", "es-419+f2"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_speech_negatives_cli_writes_speech_in_every_second(tmp_path: Path) -> None:
    out = tmp_path / "FONDO"
    out.mkdir()
    (out / "keep.wav").write_bytes(b"x")
    seeds = ["--seeds", str(ROOT / "data" / "demo-seeds")]
    assert run_main(SN.main, ["--out", str(out), "--minutes", "0.2", "--file-s", "6", *seeds]) == 0
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
    assert run_main(SN.main, ["--out", str(again), "--minutes", "0.2", "--file-s", "6", *seeds]) == 0
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
