"""Does the board fire what the host fires? ``invoke listen --events-out`` files against ``pipeline.eval.detect``.

For each WAV: the host's events (the float ONNX model, the build's calibrated detector) and the board's
(the runtime on the NPU, or the EMULATED INT8 model on the board emulator) must name the same classes in the
same order, each within one hop in time; a keyword-free WAV must give no event on the board. ``--min-events``
keeps the check from passing on a stream where neither side fires. ``--model`` scores the host side with another
ONNX file: the EMULATED axmodel's own INT8 model (``pulsar2.int8_onnx``) checks the board runtime's loop alone
(features, windows, detector), where a small model's events near the threshold would otherwise differ by INT8
rounding (that difference is eval-npu's to measure).

    python -m device.listen_check --build build --wav data/demo-stream/commands.wav \\
        --board-events build/device/listen-commands.jsonl --min-events 1
    python -m device.listen_check --build build --wav data/demo-stream/talk.wav \\
        --board-events build/device/listen-talk.jsonl --keyword-free
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import die, run_main, setup_logging


def host_events(build: Path, wav: Path, model_path: Path | None = None) -> tuple[list[dict], float]:
    from pipeline.audio.wav import load_audio
    from pipeline.core.detector import Detector, DetectorSettings
    from pipeline.eval.detect import stream_probs
    from pipeline.model.infer import OnnxModel

    model = OnnxModel(model_path or build / "model" / "kws.onnx")
    settings = DetectorSettings.from_mapping(json.loads((build / "detector" / "settings.json").read_text())["settings"])
    det = Detector(settings, model.classes, model.contract.clip_samples / model.contract.sample_rate)
    events = det.run(stream_probs(model, load_audio(wav, model.contract.sample_rate), settings.hop_s))
    return [{"class": e.class_name, "time_s": e.end_s, "prob": e.score} for e in events], settings.hop_s


def compare(host: list[dict], board: list[dict], hop_s: float) -> list[str]:
    problems = []
    if [e["class"] for e in host] != [e["class"] for e in board]:
        problems.append(f"classes differ: host {[e['class'] for e in host]}, board {[e['class'] for e in board]}")
    for h, b in zip(host, board):
        if h["class"] == b["class"] and abs(h["time_s"] - b["time_s"]) > hop_s + 1e-6:
            problems.append(f"{h['class']}: host at {h['time_s']:.2f} s, board at {b['time_s']:.2f} s (more than one hop)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=Path("build"))
    p.add_argument("--wav", type=Path, required=True)
    p.add_argument("--board-events", type=Path, required=True, help="JSON lines of invoke listen --events-out")
    p.add_argument("--keyword-free", action="store_true", help="the WAV holds no command: the board must fire nothing")
    p.add_argument("--min-events", type=int, default=0, help="fail if the host fires fewer events than this")
    p.add_argument("--model", type=Path, help="the host's ONNX model (default: <build>/model/kws.onnx)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        board = [json.loads(line) for line in args.board_events.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        die(f"{args.board_events}: unreadable ({e}); write it with invoke listen --events-out")
    host, hop_s = host_events(args.build, args.wav, args.model)
    print(f"{args.wav}: host {len(host)} event(s) {[(e['class'], e['time_s']) for e in host]}; "
          f"board {len(board)} event(s) {[(e['class'], e['time_s']) for e in board]}")
    problems = [] if args.keyword_free else compare(host, board, hop_s)
    if args.keyword_free and board:
        problems.append(f"{len(board)} event(s) on keyword-free audio")
    if len(host) < args.min_events:
        problems.append(f"the host fired {len(host)} event(s), fewer than --min-events {args.min_events}: the check "
                        "would pass on nothing")
    for line in problems:
        print(f"  MISMATCH: {line}")
    if problems:
        return 1
    print("  board and host agree" + (" (no event)" if args.keyword_free else " (same classes, within one hop)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
