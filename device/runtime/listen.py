#!/usr/bin/env python3
"""The board runtime: microphone (or a WAV) -> features -> model on the NPU -> detector -> one JSON line per event.

Runs on the board with python3 + numpy + axengine (no torch): the deploy bundle holds this folder
(``runtime/``: this file, frontend.py, engine.py, detector.py = pipeline/core/detector.py, runtime.json,
mel_fb.npy) beside ``model/compiled.axmodel``. Every hop (``hop_s`` of runtime.json, 100 ms) the window of
the last ``clip_samples`` (1 s) is turned into the model input, run on the NPU, softmaxed and fed to the
detector with the settings ``make detector`` calibrated for this model. The windows are those of
``pipeline.eval.detect`` (starts at 0, hop, 2 hop, ...), so a WAV gives the host's windows.

Audio: ALSA through ``arecord -D DEVICE -f FORMAT -r 16000 -c 1 -t raw`` (default ``plughw:0,0``, the LLM
Kit's microphone, captured as S32_LE: its driver garbles 16-bit capture), or ``--wav FILE`` at real-time
pace (``--fast``: as fast as it computes). Events on stdout, one JSON object per line::

    {"time_s": 3.1, "class": "SALIR", "prob": 0.998, "latency_ms": 4.2, "start_s": 2.1, "window": 21}

``time_s`` is the end of the window that fired (audio time since the start), ``latency_ms`` the time from
that window's last sample reaching the runtime to the event being printed. Logs and the final timing
summary (``--stats``) go to stderr. ``--exec CMD`` runs CMD with the class appended as its last argument for
every event (an argument list split like a shell would, never run through a shell).

    python3 /opt/kws/current/runtime/listen.py                     # the microphone, until stopped
    python3 /opt/kws/current/runtime/listen.py --wav take.wav --fast --stats
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

if __package__:  # imported from the repository (tests, benchmarks)
    from device.runtime.engine import EngineError, open_session, softmax
    from device.runtime.frontend import StreamingFrontend
    from pipeline.core.detector import Detector, DetectorSettings
else:  # run as a script from the bundle's runtime/ folder
    from detector import Detector, DetectorSettings
    from engine import EngineError, open_session, softmax
    from frontend import StreamingFrontend

DEFAULT_DEVICE = "plughw:0,0"
FORMATS = {"S16_LE": ("<i2", 2**15), "S32_LE": ("<i4", 2**31)}
RUNTIME_JSON = "runtime.json"


class RuntimeFault(RuntimeError):
    """A fault with a message that names the file or device and the fix."""


class Stop(Exception):
    """SIGTERM / SIGHUP / SIGINT: leave the loop and clean up."""


def _stop(signum: int, _frame: object) -> None:
    # once: a Ctrl-C reaches the runtime twice (the pty's SIGINT, and the shell forwarding it as SIGTERM), and a
    # second Stop raised while the first is being handled would cut the clean-up short
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


# ---- audio sources --------------------------------------------------------------------------------


def wav_chunks(path: str, chunk: int, sample_rate: int, realtime: bool) -> Iterator[tuple[np.ndarray, float]]:
    """``(float32 samples, arrival time)`` chunks of a 16-bit or 32-bit PCM mono WAV at ``sample_rate``."""
    try:
        w = wave.open(path, "rb")
    except FileNotFoundError:
        raise RuntimeFault(f"{path}: no such WAV file") from None
    except (wave.Error, EOFError) as e:
        raise RuntimeFault(f"{path}: not a PCM WAV file ({e}); convert it: sox IN -r {sample_rate} -c 1 -b 16 OUT.wav") from None
    with w:
        width = w.getsampwidth()
        if w.getnchannels() != 1 or w.getframerate() != sample_rate or width not in (2, 4):
            raise RuntimeFault(f"{path}: {w.getnchannels()} channel(s), {w.getframerate()} Hz, {8 * width}-bit; the "
                               f"runtime takes mono {sample_rate} Hz 16- or 32-bit PCM: "
                               f"sox IN -r {sample_rate} -c 1 -b 16 OUT.wav")
        dtype, scale = ("<i2", 2**15) if width == 2 else ("<i4", 2**31)
        t0 = time.monotonic()
        done = 0
        while True:
            data = w.readframes(chunk)
            if not data:
                return
            x = np.frombuffer(data, dtype=dtype).astype(np.float32) / scale
            done += x.size
            if realtime:  # the chunk "arrives" once its last sample has been played
                delay = t0 + done / sample_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield x, time.monotonic()


class Arecord:
    """``arecord`` capture as raw PCM on stdout; the child ends with us (SIGTERM on exit, PDEATHSIG)."""

    def __init__(self, device: str, fmt: str, sample_rate: int) -> None:
        if fmt not in FORMATS:
            raise RuntimeFault(f"--format {fmt}: use one of {sorted(FORMATS)}")
        self.dtype, self.scale = FORMATS[fmt]
        self.width = np.dtype(self.dtype).itemsize
        self.cmd = ["arecord", "-q", "-D", device, "-f", fmt, "-r", str(sample_rate), "-c", "1", "-t", "raw"]
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         preexec_fn=_die_with_parent)
        except FileNotFoundError:
            raise RuntimeFault("arecord not found: apt-get install alsa-utils on the board") from None

    def chunks(self, chunk: int) -> Iterator[tuple[np.ndarray, float]]:
        want = chunk * self.width
        assert self.proc.stdout is not None
        while True:
            data = self.proc.stdout.read(want)
            if not data:
                err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                code = self.proc.wait()
                raise RuntimeFault(f"{' '.join(self.cmd)} stopped (exit {code}): {err or 'no message'}; "
                                   "list the capture devices with `arecord -l` and pass --device")
            data = data[: len(data) - len(data) % self.width]
            yield np.frombuffer(data, dtype=self.dtype).astype(np.float32) / self.scale, time.monotonic()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _die_with_parent() -> None:
    """In the arecord child: SIGTERM when the runtime dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


# ---- the loop ---------------------------------------------------------------------------------------


def load_runtime(runtime_dir: Path) -> tuple[dict, np.ndarray]:
    path = runtime_dir / RUNTIME_JSON
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        fb = np.load(runtime_dir / spec["mel_fb"], allow_pickle=False)
    except FileNotFoundError as e:
        raise RuntimeFault(f"{e.filename}: missing from the bundle; deploy it again (invoke deploy)") from None
    except (ValueError, KeyError) as e:
        raise RuntimeFault(f"{path}: unreadable ({e}); deploy the bundle again (invoke deploy)") from None
    return spec, fb


class Listener:
    def __init__(self, spec: dict, mel_fb: np.ndarray, model_path: str, exec_argv: Sequence[str] = ()) -> None:
        self.spec = spec
        self.classes = list(spec["classes"])
        contract = spec["contract"]
        self.sample_rate = int(contract["sample_rate"])
        self.settings = DetectorSettings.from_mapping(spec["detector"])
        self.hop = round(self.settings.hop_s * self.sample_rate)
        self.window_s = int(contract["clip_samples"]) / self.sample_rate
        self.frontend = StreamingFrontend(contract, mel_fb, self.hop)
        self.session = open_session(model_path)
        self.detector = Detector(self.settings, self.classes, self.window_s)
        self.exec_argv = list(exec_argv)
        self.children: list[subprocess.Popen] = []
        self.times: dict[str, list[float]] = {"features": [], "inference": [], "detector": []}
        self.events = 0

    def feed(self, samples: np.ndarray, arrived: float, out) -> None:
        self.frontend.push(samples)
        self._drain(arrived, out)

    def finish(self, out) -> None:
        self.frontend.finish()
        self._drain(time.monotonic(), out)

    def _drain(self, arrived: float, out) -> None:
        while True:
            t0 = time.perf_counter()
            x = self.frontend.next_window()
            if x is None:
                return
            t1 = time.perf_counter()
            probs = softmax(self.session.logits(x))
            t2 = time.perf_counter()
            events = self.detector.step(probs)
            t3 = time.perf_counter()
            self.times["features"].append((t1 - t0) * 1e3)
            self.times["inference"].append((t2 - t1) * 1e3)
            self.times["detector"].append((t3 - t2) * 1e3)
            for e in events:
                self.emit(e, arrived, out)

    def emit(self, e, arrived: float, out) -> None:
        latency = max(0.0, (time.monotonic() - arrived) * 1e3)
        line = {"time_s": e.end_s, "class": e.class_name, "prob": round(float(e.score), 6),
                "latency_ms": round(latency, 3), "start_s": e.start_s, "window": e.window_index}
        out.write(json.dumps(line) + "\n")
        out.flush()
        self.events += 1
        if self.exec_argv:
            self.children = [c for c in self.children if c.poll() is None]
            try:
                self.children.append(subprocess.Popen([*self.exec_argv, e.class_name], stdin=subprocess.DEVNULL))
            except OSError as err:
                print(f"listen: --exec {shlex.join(self.exec_argv)}: {err}", file=sys.stderr, flush=True)

    def stats(self, audio_s: float) -> dict:
        def pct(v: list[float]) -> dict:
            a = np.asarray(v or [0.0])
            return {"p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4),
                    "mean": round(float(a.mean()), 4)}

        total = sum(sum(v) for v in self.times.values()) / 1e3
        return {"hops": len(self.times["features"]), "audio_s": round(audio_s, 3), "events": self.events,
                "engine": self.session.kind, **{f"{k}_ms": pct(v) for k, v in self.times.items()},
                "real_time_factor": round(total / audio_s, 5) if audio_s > 0 else None,
                "hop_budget_ms": self.settings.hop_s * 1e3}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="listen.py", description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent
    p.add_argument("--bundle", type=Path, default=here.parent, help="the deployed bundle (default: this file's ../)")
    p.add_argument("--model", help="model file (default: <bundle>/model/compiled.axmodel; a .onnx runs with ONNX Runtime)")
    p.add_argument("--wav", help="read this WAV (16 kHz mono PCM) instead of the microphone")
    p.add_argument("--fast", action="store_true", help="with --wav: as fast as it computes, not at real-time pace")
    p.add_argument("--device", default=DEFAULT_DEVICE, help=f"ALSA capture device for arecord -D ({DEFAULT_DEVICE})")
    p.add_argument("--format", default="S32_LE", choices=sorted(FORMATS), help="arecord sample format (S32_LE)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this much audio (0: until stopped / end of WAV)")
    p.add_argument("--exec", dest="exec_cmd", default="", help="command run per event with the class appended")
    p.add_argument("--stats", action="store_true", help="print per-hop timings as JSON on stderr at the end")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, _stop)
    if args.fast and not args.wav:
        print("listen: --fast needs --wav (the microphone runs at its own pace)", file=sys.stderr)
        return 2
    source = None
    listener = None
    audio_samples = 0
    try:
        spec, fb = load_runtime(args.bundle / "runtime")
        model = args.model or str(args.bundle / "model" / "compiled.axmodel")
        listener = Listener(spec, fb, model, shlex.split(args.exec_cmd))
        limit = round(args.seconds * listener.sample_rate) if args.seconds > 0 else None
        what = f"{args.wav} ({'fast' if args.fast else 'real time'})" if args.wav else f"arecord -D {args.device} -f {args.format}"
        print(f"listen: {model} on {listener.session.kind} {listener.session.version}; {len(listener.classes)} classes; "
              f"window {listener.window_s:g} s every {listener.settings.hop_s:g} s; detector "
              f"{spec.get('detector_source', '?')}; audio {what}", file=sys.stderr, flush=True)
        if args.wav:
            chunks = wav_chunks(args.wav, listener.hop, listener.sample_rate, realtime=not args.fast)
        else:
            source = Arecord(args.device, args.format, listener.sample_rate)
            chunks = source.chunks(listener.hop)
        for x, arrived in chunks:
            if limit is not None and audio_samples + x.size >= limit:
                x = x[: limit - audio_samples]
                audio_samples += x.size
                listener.feed(x, arrived, sys.stdout)
                break
            audio_samples += x.size
            listener.feed(x, arrived, sys.stdout)
        if args.wav:
            listener.finish(sys.stdout)
    except (RuntimeFault, EngineError) as e:
        print(f"listen: error: {e}", file=sys.stderr, flush=True)
        return 2
    except Stop as s:
        print(f"listen: stopped by {s}", file=sys.stderr, flush=True)
    except BrokenPipeError:  # the reader went away (ssh dropped): nothing left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if source is not None:
            source.close()
    if args.stats and listener is not None:
        print(json.dumps({"stats": listener.stats(audio_samples / listener.sample_rate)}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
