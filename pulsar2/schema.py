"""Validate a Pulsar2 build config against ``schemas/pulsar2-config.schema.json``; report every error.

Errors come back as ``"$.quant.input_configs[0].calibration_format: 'Png' is not one of [...]"`` lines, one
per problem (not just the first), so a user can fix a config in one go. Used by ``pulsar2.config`` before it
writes, by the emulator before it builds, and by hand:

    python -m pulsar2.schema build/pulsar2/kws_build_int8_config.json
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "pulsar2-config.schema.json"


@functools.cache
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def json_path(parts: Iterable[str | int]) -> str:
    """``["quant", "input_configs", 0]`` -> ``$.quant.input_configs[0]``."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _describe(error: jsonschema.ValidationError) -> list[str]:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in error.schema.get("properties", {}))
        return [f"{json_path([*where, k])}: unknown key (not a Pulsar2 build option here; allowed: {', '.join(allowed)})"
                for k in unknown]
    if error.validator == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        return [f"{json_path([*where, k])}: required key is missing" for k in missing] or [f"{json_path(where)}: {error.message}"]
    if error.validator == "anyOf":
        hint = error.schema.get("description", "")
        return [f"{json_path(where)}: {error.instance!r} matches none of the allowed forms" + (f" ({hint})" if hint else "")]
    if error.validator == "enum" and error.schema.get("description"):
        return [f"{json_path(where)}: {error.message} ({error.schema['description']})"]
    return [f"{json_path(where)}: {error.message}"]


def validate_config(obj: Any) -> list[str]:
    """All schema errors of ``obj`` as ``<JSON path>: <what is wrong>`` strings; empty if valid."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    out: list[str] = []
    for e in errors:
        for line in _describe(e):
            if line not in out:
                out.append(line)
    return out


def load_config_file(path: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Read a strict-JSON config; ``(config, errors)`` with errors from parsing or the schema."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [f"{p}: config file not found"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, [f"{p}: not strict JSON ({e}); the project writes configs without comments"]
    return obj, validate_config(obj)


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths or any(p.startswith("-") for p in paths):
        print("usage: python -m pulsar2.schema CONFIG.json [...]", file=sys.stderr)
        return 2
    bad = 0
    for p in paths:
        _, errors = load_config_file(p)
        if errors:
            bad += 1
            print(f"error: {p}: {len(errors)} schema error(s) against {SCHEMA_PATH.name}:", file=sys.stderr)
            for line in errors:
                print(f"  {line}", file=sys.stderr)
        else:
            print(f"{p}: valid ({SCHEMA_PATH.name})")
    return 2 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
