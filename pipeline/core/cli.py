"""Shared command-line plumbing for the stages: params files, logging, clean errors.

A stage is ``python -m pipeline.<stage> --params pipeline/params/default/<stage>.toml [--flag value …]``.
The params file supplies defaults for the flags (key ``per_class`` <-> flag ``--per-class``); flags given
on the command line win. The file is validated against ``schemas/params/<stage>.schema.json`` first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "params"
LOG_FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


class StageError(Exception):
    """Bad input or a failed check: printed as one clear line, exit status 2, no traceback."""


def die(message: str) -> None:
    raise StageError(message)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def load_params(path: str | Path, stage: str) -> dict[str, Any]:
    """Read and validate a stage's TOML params file; errors name the file, the key and the fix."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        die(f"{p}: params file not found (presets live in pipeline/params/<preset>/{stage}.toml)")
    except tomllib.TOMLDecodeError as e:
        die(f"{p}: not valid TOML: {e}")
    schema_path = SCHEMA_DIR / f"{stage}.schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]
        die(f"{p}: invalid {stage} parameters (schema {schema_path.name}):\n" + "\n".join(lines))
    return data


def stage_parser(description: str, stage: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", type=Path, help=f"TOML file with defaults for the flags (schemas/params/{stage}.schema.json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def parse_stage_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, stage: str) -> argparse.Namespace:
    """Parse argv with the params file (if given) supplying defaults; unknown params keys are an error."""
    pre, _ = parser.parse_known_args(argv)
    params: dict[str, Any] = {}
    if pre.params is not None:
        params = load_params(pre.params, stage)
        dests = {a.dest for a in parser._actions}
        unknown = sorted(set(params) - dests)
        if unknown:
            die(f"{pre.params}: keys {unknown} are not options of pipeline.{stage}; remove them or fix the spelling")
        parser.set_defaults(**params)
    args = parser.parse_args(argv)
    args.params_used = {k: getattr(args, k) for k in sorted(params)} if params else {}
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
