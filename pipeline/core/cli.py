"""Shared command-line plumbing for the stages: parameters, logging, clean errors.

A stage is ``python -m pipeline.stages.<stage> [--params FILE] [--flag value …]``. Its parameters are defined
once, in ``schemas/params/<stage>.schema.json`` (``pipeline.core.params``): each becomes a flag
(``per_class`` <-> ``--per-class``), takes its value from the flag, else from the ``--params`` file, else from
the schema default, and is validated against the schema before the stage starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.core import params

LOG_FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


class StageError(Exception):
    """Bad input or a failed check: printed as one clear line, exit status 2, no traceback."""


def die(message: str) -> None:
    raise StageError(message)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def stage_parser(description: str, stage: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path,
                        help=f"parameter file: a TOML file's [{stage}] section (pipeline/params/presets/*.toml) or the "
                             f"resolved JSON make writes (build/params/{stage}.json); flags given here win")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def parse_stage_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, stage: str) -> argparse.Namespace:
    """Parse argv: the stage's own options plus one flag per parameter of ``schemas/params/<stage>.schema.json``.

    Each parameter takes the value of its flag if given, else of the ``--params`` file, else the schema default;
    the result is validated against the schema and set on the namespace (``args.per_class``), and
    ``args.params_used`` holds every parameter value.
    """
    params.add_arguments(parser, stage)
    args = parser.parse_args(argv)
    try:
        base = params.resolve(stage, [args.params] if args.params is not None else [])
        values = params.values_from_args(args, stage, base)
        params.validate(stage, values, "command line" if args.params is None else f"{args.params} + command line")
    except params.ParamsError as e:
        die(str(e))
    for name, value in values.items():
        setattr(args, name, value)
    args.params_used = values
    return args


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a stage's main; turn StageError into ``error: …`` on stderr and exit status 2."""
    try:
        return main(argv)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was left half-written", file=sys.stderr)
        return 130


def csv_floats(text: str) -> list[float]:
    """argparse type for ``20,10,5,0``."""
    try:
        return [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
