"""Keyword-free talk by many espeak-ng voices: the speech negatives the model learns as background.

Utterances of a text corpus (``pipeline.audio.texts``: generated sentences, phrases and near-miss words
derived from the commands), each by the next voice of a list, at a few speeds and pitches, with short
pauses (so every 1 s window cut from the talk holds speech), over a faint pink room floor. ``utterances`` does
the same for any voice (the voices stage's neural voice speaks its talk through it).

    from pipeline.audio.talk import talk
    audio, texts, voices = talk(index=0, seconds=15.0, voices=tts.training_voices(), split="train",
                                vocabulary=vocab, espeak=tts.espeak_binary(), seed=4242)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipeline.audio import tts
from pipeline.audio.augment import coloured_noise
from pipeline.audio.texts import negative_text
from pipeline.core.vocabulary import Vocabulary

SAMPLE_RATE = 16000
SPEEDS_WPM: tuple[int, ...] = (135, 160, 185)  # espeak-ng -s, drawn per utterance
PITCHES: tuple[int, ...] = (35, 50, 65)         # espeak-ng -p (0-99), drawn per utterance
PAUSE_S = (0.05, 0.25)  # pause between utterances, uniform range (short: every 1 s window holds speech)
PEAK = 0.5  # peak level of each utterance
ROOM_FLOOR_DBFS = -60.0  # faint pink floor (no digital silence)
# Names of the synthetic background files (pipeline.stages.voices): talk, and takes of one near-miss word
# each, which the dataset stage makes into clips as it makes command clips.
TALK_PREFIX = "speech_neg_tts_"
NEAR_MISS_PREFIX = "near_miss_"


def trim_silence(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing samples below ``threshold`` (espeak-ng pads with digital silence)."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    return x[loud[0]: loud[-1] + 1] if loud.size else x[:0]


def talk(index: int, seconds: float, voices: Sequence[str], split: str, vocabulary: Vocabulary, espeak: str,
         seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """About ``seconds`` of keyword-free utterances, utterance ``j`` by ``voices[(index + j) % len]``, from a
    generator made of ``(seed, index)``; returns the audio and each utterance's text and voice."""
    def say(text: str, j: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        voice = voices[(index + j) % len(voices)]
        speed, pitch = int(rng.choice(SPEEDS_WPM)), int(rng.choice(PITCHES))
        return trim_silence(tts.speak(text, voice, speed, pitch, espeak)), voice

    return utterances(np.random.default_rng([seed, 0, index]), seconds, split, vocabulary, say, seed * 1000 + index)


def utterances(rng: np.random.Generator, seconds: float, split: str, vocabulary: Vocabulary,
               say: Callable[[str, int, np.random.Generator], tuple[np.ndarray, str]],
               floor_seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """About ``seconds`` of keyword-free utterances, utterance ``j`` spoken by ``say(text, j, rng)`` (its audio
    and a voice label), each at ``PEAK`` with a short pause, over the room floor."""
    parts: list[np.ndarray] = []
    texts: list[str] = []
    used: list[str] = []
    n = 0
    while n < seconds * SAMPLE_RATE:
        text = negative_text(rng, split, vocabulary, 1)
        speech, voice = say(text, len(texts), rng)
        speech = speech * np.float32(PEAK / max(float(np.max(np.abs(speech))) if speech.size else 0.0, 1e-9))
        pause = np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), dtype=np.float32)
        parts += [speech, pause]
        texts.append(text)
        used.append(voice)
        n += speech.size + pause.size
    audio = np.concatenate(parts)
    floor = coloured_noise(audio.size, "pink", floor_seed) * np.float32(10 ** (ROOM_FLOOR_DBFS / 20))
    return (audio + floor).astype(np.float32), texts, used
