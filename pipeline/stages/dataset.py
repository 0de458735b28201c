"""Stage 1, dataset: seed recordings -> augmented clips as long as the window (16 kHz mono 16-bit) + clips.jsonl + manifest.

Input: ``--seeds DIR`` with one sub-folder per class (class names = sorted folder names) holding WAVs;
``FONDO`` is the background class (recordings of any length). Output (``--out DIR``, replaced as a
whole only when everything succeeded):

- ``<out>/<CLASS>/<class>_NNNNN.wav``: exactly the features' window each (``clip_samples``; 2 s by default). Keyword clips: the spoken word is
  located in the seed (``pipeline.audio.locate.locate_word``) and centred in the window; a word too long
  for the window is sped up just enough to fit. Then, as drawn: tempo and pitch change (one
  phase-vocoder pass from the seed's cached analysis), a time shift limited so the word stays inside
  the window (applied as an offset of the crop), reverb, noise (``pipeline.audio.augment``). FONDO clips:
  a window cut from the FONDO seeds (chosen in proportion to their length) at a random offset with a
  random gain. Both kinds get the optional vocal-tract-length warp (``--p-warp``, speaker variation),
  so the warp is no cue for "keyword".
- ``<out>/clips.jsonl``: per clip ``{"path", "class", "source", "params"}``; ``params`` holds every
  drawn value, so ``render_clip`` regenerates a clip from its line alone.
- ``<out>/manifest.json`` (written last): provenance, classes, counts, background class, the word
  location in every seed, conversions done, non-WAV files skipped.

Each clip has its own generator ``np.random.default_rng([seed, class_index, clip_index])``, so the
bytes do not depend on the number of worker processes.

Example::

    python -m pipeline.stages.dataset --seeds data/demo-seeds --out build/dataset
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import fnmatch
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import augment as A
from pipeline.audio.locate import WORD_FIT_FRACTION, WordSpan, check_command_take
from pipeline.audio.talk import NEAR_MISS_PREFIX
from pipeline.audio.wav import AudioError, read_audio, wav_bytes
from pipeline.core.cli import die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_dir, atomic_write_json, atomic_write_text, sha256_file
from pipeline.core.params import defaults as param_defaults
from pipeline.core.provenance import manifest
from pipeline.core.workers import keep_freed_memory, one_thread_children

log = logging.getLogger(__name__)

STAGE = "dataset"
BACKGROUND_CLASS = "FONDO"
SAMPLE_RATE = 16000
# A clip is as long as the features' window: [features] clip_samples (--clip); without it, that parameter's default.
DEFAULT_CLIP_SAMPLES = int(param_defaults("features")["clip_samples"])
# Guard between the word and the window edge when limiting a shift, ms.
EDGE_GUARD_MS = 25.0
FONDO_GAIN_DB = (-12.0, 3.0)
RIR_MAX_S = 1.5
NO_WARP = {"alpha": 1.0}  # clips.jsonl records without "warp" (--p-warp 0) are not warped
WAV_SUFFIXES = (".wav",)
CHUNK_CLIPS = 64
SPECTRA_CACHE_SEEDS = 256  # round robin over a class's synthetic takes (about 134) stays in the cache
AUTO_CLIPS_PER_WORKER = 1000


# ---- inputs ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Seed:
    source: str  # relative to the seeds folder, e.g. "SALIR/000_salir.wav"
    cls: str
    audio: np.ndarray = dataclasses.field(repr=False, compare=False)
    word: WordSpan | None  # None for the background class


@dataclasses.dataclass(frozen=True)
class Bank:
    """Everything read from disk that clips are made of: the user's seeds and the synthetic ones
    (``extra``: ``pipeline.stages.voices``), per class."""

    classes: tuple[str, ...]
    seeds: dict[str, tuple[Seed, ...]]
    extra: dict[str, tuple[Seed, ...]]
    rirs: tuple[np.ndarray, ...]
    rir_files: tuple[str, ...]
    # synthetic near-miss takes that fail the checks a command passes (a long word for a short clip): not used
    left_out: tuple[str, ...] = ()
    # analysis spectra of the keyword seeds, filled lazily in each process (see seed_spectra)
    spectra: dict[tuple[str, int], tuple[A.Spectra, int]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False)

    @property
    def by_source(self) -> dict[str, Seed]:
        return {s.source: s for groups in (self.seeds, self.extra) for group in groups.values() for s in group}

    @property
    def fondo(self) -> tuple[Seed, ...]:
        return self.seeds[BACKGROUND_CLASS] + self.extra.get(BACKGROUND_CLASS, ())


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The transforms and their settings (from the params)."""

    shift: A.Shift
    stretch: A.Stretch
    pitch: A.Pitch
    noise: A.Noise
    reverb: A.Reverb
    fondo_gain: A.Gain
    max_shift_ms: float
    warp: A.FormantWarp = dataclasses.field(default_factory=lambda: A.FormantWarp(0.0, 1.0, 1.0))
    fondo_noise: A.Noise | None = None  # noise under background clips (talk in a noisy room), drawn last
    user_share: float = 1.0             # share of each command's clips made from the user's own seeds
    near_miss_share: float = 0.0        # share of the synthetic background clips made around a near-miss word
    channel: A.Channel = dataclasses.field(default_factory=A.Channel)  # microphone, line, converter: drawn last
    clip_samples: int = DEFAULT_CLIP_SAMPLES  # samples per clip: the feature contract's window


def scan_seeds(seeds_dir: Path) -> tuple[list[str], dict[str, list[Path]], list[str]]:
    """Class folders, their WAVs, and the non-WAV files that will be ignored. Dies on bad layout."""
    if not seeds_dir.is_dir():
        die(f"{seeds_dir}: seeds folder not found; pass --seeds DIR with one sub-folder per class "
            "(e.g. data/demo-seeds, made by `make demo-seeds`)")
    classes = sorted(p.name for p in seeds_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if BACKGROUND_CLASS not in classes:
        die(f"{seeds_dir}: no {BACKGROUND_CLASS}/ folder; add {seeds_dir / BACKGROUND_CLASS}/ with background "
            "recordings (fans, traffic, radio; any length)")
    keywords = [c for c in classes if c != BACKGROUND_CLASS]
    if len(keywords) < 2:
        die(f"{seeds_dir}: {len(keywords)} keyword class folder(s) ({', '.join(keywords) or 'none'}); "
            "add at least 2 folders, one per command word, each with a recording of the word")
    wavs: dict[str, list[Path]] = {}
    skipped: list[str] = []
    for c in classes:
        files = sorted(p for p in (seeds_dir / c).iterdir())
        wavs[c] = [p for p in files if p.is_file() and p.suffix.lower() in WAV_SUFFIXES]
        for p in files:
            if p not in wavs[c]:
                skipped.append(str(p.relative_to(seeds_dir)))
                log.warning("%s: not a .wav file; ignored", p)
        if not wavs[c]:
            die(f"{seeds_dir / c}: class folder has no .wav files; put at least one recording of "
                f"{'the background' if c == BACKGROUND_CLASS else 'the word ' + c} in it, or remove the folder")
    return classes, wavs, skipped


def read_seed(path: Path, cls: str, source: str, clip_samples: int) -> tuple[Seed, Any]:
    """One seed file, checked (a background recording must not be silent; a command's word is located and
    must fit a clip); returns the seed and read_audio's conversion record. die()s naming the file."""
    try:
        return checked_seed(path, cls, source, clip_samples)
    except AudioError as e:
        die(str(e))
    raise AssertionError("unreachable")


def checked_seed(path: Path, cls: str, source: str, clip_samples: int) -> tuple[Seed, Any]:
    """read_seed's checks; AudioError says what is wrong with the file."""
    audio, conv = read_audio(path, SAMPLE_RATE)
    # a background take of one near-miss word (pipeline.stages.voices) is made into clips as a command is
    if cls == BACKGROUND_CLASS and not path.name.startswith(NEAR_MISS_PREFIX):
        word = None
        level = 10 * math.log10(max(A.power(audio), 1e-24))
        if level < -70.0:
            raise AudioError(f"{path}: background recording is all silent ({level:.0f} dBFS RMS); "
                             "record real background sound (fan, traffic, room) or remove the file")
        if audio.size < clip_samples:
            log.warning("%s: background recording of %.2f s, shorter than a clip (%.2f s): its clips loop it; "
                        "record at least a few seconds of background", path, audio.size / SAMPLE_RATE,
                        clip_samples / SAMPLE_RATE)
    else:
        word = check_command_take(audio, clip_samples, SAMPLE_RATE, name=str(path))
    return Seed(source, cls, audio, word), conv


def load_extra(extra_dir: Path, classes: Sequence[str], clip_samples: int = DEFAULT_CLIP_SAMPLES
               ) -> tuple[dict[str, tuple[Seed, ...]], list[Path], list[str]]:
    """The synthetic seeds of ``pipeline.stages.voices`` (sources named ``voices:<CLASS>/<file>``), and the
    near-miss takes left out: background, so one that fails a command's checks (a word too long for the
    model's clip) is dropped with a warning, not an error about a recording the user never made."""
    if not (extra_dir / "manifest.json").is_file():
        die(f"{extra_dir}: no finished voices folder (manifest.json missing); build it with `make voices`")
    extra: dict[str, tuple[Seed, ...]] = {}
    inputs: list[Path] = [extra_dir / "manifest.json"]
    left_out: list[str] = []
    first_reason = ""
    for d in sorted(p for p in extra_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in classes:
            die(f"{d}: class {d.name!r} is not a class of the seeds ({', '.join(classes)}); rebuild the voices "
                "for these seeds (make voices)")
        group = []
        for p in sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in WAV_SUFFIXES):
            source = f"voices:{d.name}/{p.name}"
            if d.name == BACKGROUND_CLASS and p.name.startswith(NEAR_MISS_PREFIX):
                try:
                    group.append(checked_seed(p, d.name, source, clip_samples)[0])
                except AudioError as e:
                    if not left_out:
                        first_reason = str(e)
                    left_out.append(source)
                continue
            group.append(read_seed(p, d.name, source, clip_samples)[0])
        extra[d.name] = tuple(group)
    if left_out:
        log.warning("%d of the voices' near-miss takes left out, as they fail the checks a command's take passes; "
                    "the first: %s", len(left_out), first_reason)
    return extra, inputs, left_out


def load_bank(seeds_dir: Path, rirs_root: str, extra_dir: Path | None = None,
              clip_samples: int = DEFAULT_CLIP_SAMPLES) -> tuple[Bank, list[dict[str, Any]], list[str], list[Path]]:
    """Read and check every seed (user and synthetic) and RIR; returns the bank, conversions, skipped files,
    input paths."""
    classes, wavs, skipped = scan_seeds(seeds_dir)
    conversions: list[dict[str, Any]] = []
    seeds: dict[str, tuple[Seed, ...]] = {}
    inputs: list[Path] = []
    for c in classes:
        group = []
        for path in wavs[c]:
            seed, conv = read_seed(path, c, path.relative_to(seeds_dir).as_posix(), clip_samples)
            if conv.steps:
                conversions.append({**conv.as_dict(), "path": seed.source})
            group.append(seed)
            inputs.append(path)
        seeds[c] = tuple(group)
    extra: dict[str, tuple[Seed, ...]] = {}
    left_out: list[str] = []
    if extra_dir is not None:
        extra, extra_inputs, left_out = load_extra(extra_dir, classes, clip_samples)
        inputs += extra_inputs
    rirs: list[np.ndarray] = []
    rir_files: list[str] = []
    if rirs_root:
        root = Path(rirs_root)
        if not root.is_dir():
            die(f"{root}: --rirs-root folder not found; give a folder of room impulse response WAVs, or '' "
                "to synthesise RIRs")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in WAV_SUFFIXES)
        if not files:
            die(f"{root}: no .wav room impulse responses in --rirs-root; add some, or pass --rirs-root '' to "
                "synthesise them")
        for p in files:
            try:
                h, _ = read_audio(p, SAMPLE_RATE)
            except AudioError as e:
                die(str(e))
            if float(np.max(np.abs(h))) == 0.0:
                die(f"{p}: room impulse response is all zeros; remove it")
            rirs.append(A.prepare_rir(h, int(RIR_MAX_S * SAMPLE_RATE)))
            rir_files.append(str(p))
            inputs.append(p)
    return (Bank(tuple(classes), seeds, extra, tuple(rirs), tuple(rir_files), tuple(left_out)), conversions, skipped,
            inputs)


def excluded_from_noise(source: str, patterns: str) -> bool:
    """True if the FONDO file's name matches one of the comma-separated glob ``patterns``."""
    name = Path(source).name
    return any(fnmatch.fnmatch(name, g.strip()) for g in patterns.split(",") if g.strip())


def make_recipe(params: dict[str, Any], bank: Bank, clip_samples: int = DEFAULT_CLIP_SAMPLES) -> Recipe:
    # FONDO files matching --noise-exclude (default: the speech negatives) are FONDO clips but never noise
    # under a keyword: talk mixed under a word at 0-20 dB SNR blurs "keyword" vs "speech" (docs/results.md).
    fondo_audio = tuple(s.audio for s in bank.fondo if not excluded_from_noise(s.source, params["noise_exclude"])) \
        if params["use_fondo_as_noise"] else ()
    return Recipe(
        shift=A.Shift(params["p_shift"], params["max_shift_ms"]),
        stretch=A.Stretch(params["p_stretch"], params["stretch_low"], params["stretch_high"]),
        pitch=A.Pitch(params["p_pitch"], params["pitch_semitones"]),
        noise=A.Noise(params["p_noise"], tuple(float(s) for s in params["snr_list"]), clip_samples, fondo_audio),
        reverb=A.Reverb(params["p_reverb"], bank.rirs),
        fondo_gain=A.Gain(*FONDO_GAIN_DB),
        max_shift_ms=float(params["max_shift_ms"]),
        warp=A.FormantWarp(params["p_warp"], params["warp_low"], params["warp_high"]),
        fondo_noise=A.Noise(params["p_noise_fondo"], tuple(float(s) for s in params["snr_list"]), clip_samples,
                            fondo_audio),
        user_share=float(params["user_share"]),
        near_miss_share=float(params["near_miss_share"]),
        channel=A.Channel(p_mic=params["p_channel_mic"], p_band=params["p_channel_band"],
                          p_low_rate=params["p_channel_low_rate"], p_gain=params["p_channel_gain"],
                          gain_db=params["channel_gain_db"], p_8bit=params["p_channel_8bit"]),
        clip_samples=clip_samples,
    )


# ---- one clip ----------------------------------------------------------------------------------------


def clip_name(cls: str, index: int, total: int) -> str:
    width = max(5, len(str(max(total - 1, 0))))
    return f"{cls}/{cls.lower()}_{index:0{width}d}.wav"


def is_users(clip_index: int, user_share: float) -> bool:
    """Whether clip ``clip_index`` of a class is made from the user's seeds: ``user_share`` of the clips,
    spread evenly (no randomness)."""
    return math.floor((clip_index + 1) * user_share) > math.floor(clip_index * user_share)


def keyword_source(bank: Bank, cls: str, clip_index: int, user_share: float) -> Seed:
    """The seed a command clip is made from: the user's for a ``user_share`` of the clips, the synthetic
    takes for the rest; round robin within each."""
    user, synthetic = bank.seeds[cls], bank.extra.get(cls, ())
    if not synthetic:
        return user[clip_index % len(user)]
    n_before = math.floor(clip_index * user_share)  # the user's clips before this one
    if is_users(clip_index, user_share):
        return user[n_before % len(user)]
    return synthetic[(clip_index - n_before) % len(synthetic)]


def background_pool(bank: Bank, clip_index: int, user_share: float) -> tuple[Seed, ...]:
    """The recordings a background clip is cut from: the user's FONDO for a ``user_share`` of the clips (their
    noise and talk), the synthetic talk for the rest."""
    user, synthetic = bank.seeds[BACKGROUND_CLASS], bank.extra.get(BACKGROUND_CLASS, ())
    return user if not synthetic or is_users(clip_index, user_share) else synthetic


def plan_clip(bank: Bank, recipe: Recipe, seed: int, class_index: int, clip_index: int, total: int) -> dict[str, Any]:
    """Draw everything for one clip from its own generator; returns its clips.jsonl record."""
    cls = bank.classes[class_index]
    rng = np.random.default_rng([seed, class_index, clip_index])
    name = clip_name(cls, clip_index, total)
    if cls != BACKGROUND_CLASS:
        s = keyword_source(bank, cls, clip_index, recipe.user_share)
        return {"path": name, "class": cls, "source": s.source, "params": plan_word(s, recipe, rng)}
    group = background_pool(bank, clip_index, recipe.user_share)
    near = [s for s in group if s.word is not None]  # near-miss words, isolated like commands
    if near and rng.random() < recipe.near_miss_share:
        s = near[int(rng.integers(len(near)))]
        return {"path": name, "class": cls, "source": s.source, "params": plan_word(s, recipe, rng)}
    group = tuple(s for s in group if s.word is None) or group
    lengths = np.array([s.audio.size for s in group], dtype=np.float64)
    k = int(rng.choice(len(group), p=lengths / lengths.sum()))
    offset = int(rng.integers(0, max(1, group[k].audio.size - recipe.clip_samples + 1)))
    params: dict[str, Any] = {"offset": offset, **recipe.fondo_gain.sample(rng)}
    if recipe.warp.p > 0:  # drawn last (and only when enabled): the earlier draws do not depend on it
        params["warp"] = recipe.warp.sample(rng)
    if recipe.fondo_noise is not None and recipe.fondo_noise.p > 0:  # likewise, after the warp
        params["noise"] = recipe.fondo_noise.sample(rng)
    if recipe.channel.active:  # likewise, last
        params["channel"] = recipe.channel.sample(rng)
    return {"path": name, "class": cls, "source": group[k].source, "params": params}


def plan_word(s: Seed, recipe: Recipe, rng: np.random.Generator) -> dict[str, Any]:
    """The drawn values of a clip made around a located word (a command, or a near miss)."""
    assert s.word is not None
    shift = recipe.shift.sample(rng)
    stretch = recipe.stretch.sample(rng)
    pitch = recipe.pitch.sample(rng)
    reverb = recipe.reverb.sample(rng)
    noise = recipe.noise.sample(rng)
    n = recipe.clip_samples
    fit = s.word.length / (WORD_FIT_FRACTION * n)
    tempo = stretch["rate"]
    if fit > tempo:  # the word would not fit in the window: speed it up just enough
        tempo = round(math.ceil(fit * 1e4) / 1e4, 4)
    word_out = s.word.length / tempo
    slack_ms = max(0.0, (n - word_out) / 2 / SAMPLE_RATE * 1000 - EDGE_GUARD_MS)
    shift_ms = float(np.clip(shift["shift_ms"], -slack_ms, slack_ms))
    params = {
        "word": [s.word.start, s.word.end],
        "tempo": tempo,
        "stretch_rate": stretch["rate"],
        "semitones": pitch["semitones"],
        "shift_ms": round(shift_ms, 2),
        "shift_ms_drawn": shift["shift_ms"],
        "reverb": reverb,
        "noise": noise,
    }
    if recipe.warp.p > 0:  # drawn last (and only when enabled): the earlier draws do not depend on it
        params["warp"] = recipe.warp.sample(rng)
    if recipe.channel.active:  # likewise, last
        params["channel"] = recipe.channel.sample(rng)
    return params


def max_half_window(seed: Seed, recipe: Recipe) -> int:
    """Largest half-length (samples) of seed audio any clip of this seed reads around the word centre."""
    assert seed.word is not None
    fit = math.ceil(seed.word.length / (WORD_FIT_FRACTION * recipe.clip_samples) * 1e4) / 1e4
    tempo_max = max(recipe.stretch.high, recipe.stretch.low, fit, 1.0)
    shift_max = round(recipe.max_shift_ms * SAMPLE_RATE / 1000)
    return math.ceil((recipe.clip_samples // 2 + shift_max + A.PV_N_FFT) * tempo_max) + A.PV_HOP


def seed_spectra(bank: Bank, seed: Seed, half_max: int) -> tuple[A.Spectra, int]:
    """The phase-vocoder analysis of the region around a seed's word, computed once per process;
    returns (spectra, seed sample index of the region start)."""
    key = (seed.source, half_max)
    if key not in bank.spectra:
        if len(bank.spectra) >= SPECTRA_CACHE_SEEDS:
            bank.spectra.pop(next(iter(bank.spectra)))
        assert seed.word is not None
        centre = (seed.word.start + seed.word.end) // 2
        lo, hi = centre - half_max, centre + half_max
        x = seed.audio
        region = np.pad(x[max(lo, 0): min(hi, x.size)], (max(0, -lo), max(0, hi - x.size)))
        bank.spectra[key] = (A.analyse(region), lo)
    return bank.spectra[key]


def render_clip(bank: Bank, recipe: Recipe, record: dict[str, Any], by_source: dict[str, Seed] | None = None) -> np.ndarray:
    """The clip described by a clips.jsonl record: float32, exactly recipe.clip_samples. No randomness."""
    seeds = by_source if by_source is not None else bank.by_source
    n = recipe.clip_samples
    seed = seeds[record["source"]]
    p = record["params"]
    x = seed.audio
    if "word" not in p:  # a background clip cut from a recording
        o = p["offset"]
        y = x[o: o + n]
        if y.size < n:  # FONDO recording shorter than a clip: loop it
            y = np.tile(x, -(-n // x.size) + 1)[o: o + n]
        y = recipe.warp.apply(y, SAMPLE_RATE, p.get("warp", NO_WARP))
        y = recipe.fondo_gain.apply(y, SAMPLE_RATE, p)
        if "noise" in p and recipe.fondo_noise is not None:
            y = recipe.fondo_noise.apply(y, SAMPLE_RATE, p["noise"])
        if "channel" in p:
            y = recipe.channel.apply(A.protect_clipping(y), SAMPLE_RATE, p["channel"])
        return A.protect_clipping(y)
    start, end = p["word"]
    centre = (start + end) // 2
    tempo = float(p["tempo"])
    shift = round(p["shift_ms"] * SAMPLE_RATE / 1000)  # > 0: the word sits later in the window
    # The shift is applied as an offset of the crop (same result as Shift.apply, without zero fill):
    # clip sample t shows seed sample centre + (t - n / 2 - shift) * tempo.
    first = centre - (n // 2 + shift) * tempo
    alpha = float(p.get("warp", NO_WARP)["alpha"])
    if tempo == 1.0 and A.pitch_frame_length(p["semitones"]) == A.PV_N_FFT and alpha == 1.0:
        a = int(first)
        y = x[max(a, 0): max(a + n, 0)]
        if a < 0 or a + n > x.size:  # word near the edge of the recording: pad with silence
            y = np.pad(y, (max(0, -a), n - y.size - max(0, -a)))
    else:  # tempo, pitch and formant warp in one phase-vocoder pass from this seed's spectra (analysed once
        # per process), with a lead-in
        spectra, region_lo = seed_spectra(bank, seed, max_half_window(seed, recipe))
        lead = A.PV_N_FFT // 2
        y = A.synthesise(spectra, first - region_lo - lead * tempo, tempo, float(p["semitones"]),
                         n + lead, alpha, SAMPLE_RATE)[lead:]
    y = recipe.reverb.apply(y, SAMPLE_RATE, p["reverb"])
    y = recipe.noise.apply(y, SAMPLE_RATE, p["noise"])
    if "channel" in p:
        y = recipe.channel.apply(A.protect_clipping(y), SAMPLE_RATE, p["channel"])
    return A.protect_clipping(y)


# ---- workers -----------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(bank: Bank, recipe: Recipe, out_dir: str, seed: int) -> None:
    keep_freed_memory()
    _WORKER.update(bank=bank, recipe=recipe, out_dir=Path(out_dir), seed=seed, by_source=bank.by_source)


def _make_chunk(task: tuple[int, int, int, int]) -> list[str]:
    """Plan, render and write clips [start, stop) of one class; returns their clips.jsonl lines."""
    class_index, start, stop, total = task
    bank, recipe, out_dir = _WORKER["bank"], _WORKER["recipe"], _WORKER["out_dir"]
    lines = []
    for i in range(start, stop):
        record = plan_clip(bank, recipe, _WORKER["seed"], class_index, i, total)
        audio = render_clip(bank, recipe, record, _WORKER["by_source"])
        (out_dir / record["path"]).write_bytes(wav_bytes(audio, SAMPLE_RATE))
        lines.append(json.dumps(record, separators=(",", ":"), sort_keys=True))
    return lines


def origin_counts(lines: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per class: clips made from the user's seeds and from the synthetic ones."""
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        r = json.loads(line)
        origin = "synthetic" if r["source"].startswith("voices:") else "user"
        out.setdefault(r["class"], {"user": 0, "synthetic": 0})[origin] += 1
    return out


def class_counts(bank: Bank, per_class: int, fondo_minutes: float) -> dict[str, int]:
    return {c: (round(fondo_minutes * 60) if c == BACKGROUND_CLASS else per_class) for c in bank.classes}


def generate(bank: Bank, recipe: Recipe, seed: int, counts: dict[str, int], out_dir: Path, workers: int,
             progress: bool = True) -> list[str]:
    """Write every clip under out_dir; returns the clips.jsonl lines in (class, index) order."""
    from tqdm import tqdm

    for c in bank.classes:
        (out_dir / c).mkdir(parents=True, exist_ok=True)
    tasks = [(ci, a, min(a + CHUNK_CLIPS, counts[c]), counts[c])
             for ci, c in enumerate(bank.classes) for a in range(0, counts[c], CHUNK_CLIPS)]
    total = sum(counts.values())
    lines: list[str] = []
    with tqdm(total=total, unit="clip", desc="dataset", disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1:
            _init_worker(bank, recipe, str(out_dir), seed)
            for t in tasks:
                lines += _make_chunk(t)
                bar.update(t[2] - t[1])
        else:
            ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold torch threads
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                        initargs=(bank, recipe, str(out_dir), seed)) as ex:
                with one_thread_children():  # map() submits every task, which starts the workers
                    results = ex.map(_make_chunk, tasks)
                for t, chunk in zip(tasks, results):
                    lines += chunk
                    bar.update(t[2] - t[1])
    return lines


# ---- CLI ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser(__doc__.split("\n")[0], STAGE)
    p.add_argument("--seeds", type=Path, required=True, help="folder with one sub-folder of WAVs per class (FONDO = background)")
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole on success)")
    p.add_argument("--extra-seeds", type=Path,
                   help="synthetic seeds beside the user's (pipeline.stages.voices): user_share of each command's "
                        "clips stay the user's; FONDO draws from both")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes; default: all cores for big runs, 1 for small ones "
                        "(the output bytes do not depend on it)")
    p.add_argument("--clip", type=Path,
                   help="the clip length the features need ($BUILD/params/clip.json, written with the [features] "
                        f"parameters); default {DEFAULT_CLIP_SAMPLES} samples, the [features] default")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def read_clip_samples(path: Path | None) -> int:
    if path is None:
        return DEFAULT_CLIP_SAMPLES
    try:
        clip = json.loads(path.read_text(encoding="utf-8"))["params"]
        n, rate = int(clip["clip_samples"]), int(clip["sample_rate"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        die(f"{path}: unreadable clip length ({e}); it is written by `python -m pipeline.core.params --out-dir`")
    if rate != SAMPLE_RATE:
        die(f"{path}: the features want {rate} Hz clips; the dataset makes {SAMPLE_RATE} Hz clips")
    return n


def check_params(params: dict[str, Any]) -> None:
    """Cross-parameter checks the schema cannot express."""
    if params["warp_low"] > params["warp_high"]:
        die(f"--warp-low {params['warp_low']} is above --warp-high {params['warp_high']}; swap them")
    if params["stretch_low"] > params["stretch_high"]:
        die(f"--stretch-low {params['stretch_low']} is above --stretch-high {params['stretch_high']}; swap them")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_stage_args(parser, argv, STAGE)
    setup_logging(args.verbose)
    params = args.params_used
    check_params(params)
    clip_samples = read_clip_samples(args.clip)
    bank, conversions, skipped, inputs = load_bank(args.seeds, params["rirs_root"], args.extra_seeds, clip_samples)
    recipe = make_recipe(params, bank, clip_samples)
    counts = class_counts(bank, params["per_class"], params["fondo_minutes"])
    if counts[BACKGROUND_CLASS] < 1:
        die(f"--fondo-minutes {params['fondo_minutes']}: gives no FONDO clip; use at least 1/60 minute")
    workers = args.workers
    if workers is None:  # starting a worker costs about a second: only worth it for big runs
        workers = max(1, min(os.cpu_count() or 1, sum(counts.values()) // AUTO_CLIPS_PER_WORKER))
    if workers < 1:
        die(f"--workers {workers}: must be at least 1")
    log.info("classes %s, %d clips (%s), %d worker(s)", list(bank.classes), sum(counts.values()),
             ", ".join(f"{c} {n}" for c, n in counts.items()), workers)
    with atomic_dir(args.out) as tmp:
        lines = generate(bank, recipe, params["seed"], counts, tmp, workers, progress=not args.no_progress)
        atomic_write_text(tmp / "clips.jsonl", "\n".join(lines) + "\n")
        seeds_info = [
            {"source": s.source, "class": s.cls, "duration_s": round(s.audio.size / SAMPLE_RATE, 4),
             "word": s.word.as_dict(SAMPLE_RATE) if s.word is not None else None}
            for c in bank.classes for s in bank.seeds[c]
        ]
        extra = {
            "classes": list(bank.classes),
            "background_class": BACKGROUND_CLASS,
            "counts": counts,
            "total_clips": sum(counts.values()),
            "sample_rate": SAMPLE_RATE,
            "clip_samples": recipe.clip_samples,
            "seeds_dir": str(args.seeds),
            "extra_seeds_dir": str(args.extra_seeds) if args.extra_seeds else None,
            "clips_by_origin": origin_counts(lines),
            "seeds": seeds_info,
            "conversions": conversions,
            "skipped_non_wav": {"count": len(skipped), "files": skipped},
            "near_misses_left_out": {"count": len(bank.left_out), "files": list(bank.left_out)},
            "rirs": list(bank.rir_files) or "synthetic",
            "noise": "fondo" if params["use_fondo_as_noise"] else "synthetic",
            "clips_jsonl_sha256": sha256_file(tmp / "clips.jsonl"),
        }
        manifest_inputs = inputs + ([args.params] if args.params else []) + ([args.clip] if args.clip else [])
        atomic_write_json(tmp / "manifest.json", manifest(STAGE, manifest_inputs, params, extra))
    print(f"dataset: {sum(counts.values())} clips in {args.out}/ ({', '.join(f'{c} {n}' for c, n in counts.items())})"
          + (f"; {len(skipped)} non-WAV file(s) ignored" if skipped else "")
          + (f"; {len(bank.left_out)} near-miss take(s) left out (see the log)" if bank.left_out else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
