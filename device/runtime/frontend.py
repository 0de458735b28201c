"""The feature contract in numpy, for the board (no torch there): audio -> normalised log-Mel frames.

The same computation as ``pipeline.audio.features.logmel`` (a test holds them within 1e-4): frame ``t`` of a
window starting at sample ``s`` is the periodic Hann window of ``win_length`` over samples
``[s + hop*t, s + hop*t + win_length)``, zero-padded to ``n_fft`` -> power spectrum -> the mel filterbank
(shipped in the bundle, made by torchaudio on the host) -> ``10*log10(max(P, power_floor))`` -> at most
``top_db`` below the window's loudest bin -> ``(dB - norm_mean_db) / norm_std_db``.

A frame depends only on the samples under it, so a stream computes each frame once: :class:`StreamingFrontend`
keeps the mel power of the frames of the current window and adds the frames of each new hop (10 per 100 ms).
The per-window steps (top_db, normalisation) run on the whole window each hop.

    fe = StreamingFrontend(contract, mel_fb, hop_samples=1600)   # contract: a dict of the contract fields
    fe.push(samples)                                # float32 in [-1, 1], any length
    while (x := fe.next_window()) is not None: ...      # (1, 1, n_frames, n_mels) float32
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def hann_periodic(n: int) -> np.ndarray:
    """torch.hann_window(n) (periodic), float32."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


class Frontend:
    """Whole windows: ``logmel(audio)`` for float32 audio of exactly ``clip_samples`` samples."""

    def __init__(self, contract: Mapping[str, Any], mel_fb: np.ndarray) -> None:
        self.c = dict(contract)
        self.n_fft, self.win, self.hop = int(self.c["n_fft"]), int(self.c["win_length"]), int(self.c["hop_length"])
        self.n_frames, self.n_mels = int(self.c["n_frames"]), int(self.c["n_mels"])
        self.clip_samples = int(self.c["clip_samples"])
        fb = np.asarray(mel_fb, dtype=np.float32)
        if fb.shape != (self.n_fft // 2 + 1, self.n_mels):
            raise ValueError(f"mel filterbank of shape {fb.shape}, the contract needs {(self.n_fft // 2 + 1, self.n_mels)}")
        self.fb = fb
        self.window = hann_periodic(self.win)

    def frame_power(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """Mel power ``(n_frames, n_mels)`` float32 of frames ``t = 0..n_frames-1`` of ``audio``."""
        frames = np.lib.stride_tricks.sliding_window_view(audio[: (n_frames - 1) * self.hop + self.win], self.win)
        frames = frames[:: self.hop][:n_frames] * self.window
        spec = np.fft.rfft(frames, n=self.n_fft, axis=1)  # zero padding after the window: same power as centred
        power = (spec.real * spec.real + spec.imag * spec.imag).astype(np.float32)
        return power @ self.fb

    def normalise(self, mel_power: np.ndarray) -> np.ndarray:
        """``(n_frames, n_mels)`` mel power -> the model input ``(1, 1, n_frames, n_mels)`` float32."""
        db = 10.0 * np.log10(np.maximum(mel_power, np.float32(self.c["power_floor"])))
        top_db = float(self.c["top_db"])
        if top_db > 0:
            db = np.maximum(db, db.max() - np.float32(top_db))
        x = (db - np.float32(self.c["norm_mean_db"])) / np.float32(self.c["norm_std_db"])
        return x.astype(np.float32)[None, None]

    def logmel(self, audio: np.ndarray) -> np.ndarray:
        a = np.asarray(audio, dtype=np.float32)
        if a.shape != (self.clip_samples,):
            raise ValueError(f"expected {self.clip_samples} samples, got {a.shape}")
        return self.normalise(self.frame_power(a, self.n_frames))


class StreamingFrontend(Frontend):
    """Windows of ``clip_samples`` every ``hop_samples`` over pushed audio, each frame computed once.

    Window ``k`` covers samples ``[k*hop_samples, k*hop_samples + clip_samples)``, the windows of
    ``pipeline.eval.detect.window_starts``; :meth:`finish` zero-pads the end like it does.
    """

    def __init__(self, contract: Mapping[str, Any], mel_fb: np.ndarray, hop_samples: int) -> None:
        super().__init__(contract, mel_fb)
        if hop_samples % self.hop:
            raise ValueError(f"window hop {hop_samples} samples is not a multiple of the frame hop {self.hop}")
        self.hop_samples = hop_samples
        self._frames_per_hop = hop_samples // self.hop
        self._audio = np.zeros(0, np.float32)   # samples from self._offset on
        self._offset = 0                         # absolute index of self._audio[0]
        self._power = np.zeros((0, self.n_mels), np.float32)  # mel power of frames from self._first_frame on
        self._first_frame = 0
        self._next_frame = 0                     # absolute index of the next frame to compute
        self.windows = 0                         # windows returned so far
        self.samples_in = 0

    def push(self, samples: np.ndarray) -> None:
        s = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, s])
        self.samples_in += s.size

    def next_window(self) -> np.ndarray | None:
        """The next window's model input, or None until its samples have arrived."""
        start = self.windows * self.hop_samples
        if self.samples_in < start + self.clip_samples:
            return None
        first = start // self.hop
        last = first + self.n_frames  # exclusive
        if self._next_frame < last:
            a = self._next_frame * self.hop - self._offset
            new = self.frame_power(self._audio[a:], last - self._next_frame)
            self._power = np.concatenate([self._power, new])
            self._next_frame = last
        x = self.normalise(self._power[first - self._first_frame: last - self._first_frame])
        self.windows += 1
        self._forget(first + self._frames_per_hop)
        return x

    def _forget(self, frame: int) -> None:
        """Drop frames before ``frame`` and the samples no future frame needs."""
        drop = frame - self._first_frame
        if drop > 0:
            self._power = self._power[drop:]
            self._first_frame = frame
        keep_from = self._next_frame * self.hop
        if keep_from > self._offset:
            self._audio = self._audio[keep_from - self._offset:]
            self._offset = keep_from

    def finish(self) -> None:
        """End of input: zero-pad so that the last sample is in a window (as ``window_starts`` does)."""
        n = self.samples_in
        if n <= self.clip_samples:
            windows = 1
        else:
            windows = 1 + -(-(n - self.clip_samples) // self.hop_samples)
        need = (windows - 1) * self.hop_samples + self.clip_samples
        if need > n:
            self.push(np.zeros(need - n, np.float32))
