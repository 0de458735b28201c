"""Stage parameters: one definition each, in ``schemas/params/<stage>.schema.json``.

A schema property holds a parameter's name, type, range, ``default`` and ``description``; everything else is
derived from it: the stage's command-line flags (``per_class`` <-> ``--per-class``, help from the description),
the values a stage runs with, and their validation. Parameter files hold only overrides of those defaults,
in ``[stage]`` sections:

- ``pipeline/params/models/<family>.toml``: what a model family changes (``make all MODEL=crnn``);
- ``pipeline/params/presets/<name>.toml``: what a preset changes (``make all PARAMS=smoke``).

``resolve`` layers them (defaults, then the model family, then the preset). The Makefile writes every stage's
resolved values to ``$(BUILD)/params/<stage>.json`` before it builds anything (``main`` below), rewriting a
file only when its content changes: a stage reruns exactly when one of its values changed, whichever file,
preset or family the change came from.

    python -m pipeline.core.params --model pipeline/params/models/embedding.toml \\
        --preset pipeline/params/presets/smoke.toml --out-dir build/params
    python -m pipeline.core.params --show train --preset pipeline/params/presets/smoke.toml
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema

from pipeline.core.io import write_text_if_changed

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas" / "params"
PARAMS_DIR = ROOT / "pipeline" / "params"


class ParamsError(Exception):
    """A parameter file or value that cannot be used; the message names the file, the key and the fix."""


def stages() -> list[str]:
    return sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))


@functools.cache
def schema(stage: str) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{stage}.schema.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: no parameter schema for stage {stage!r} (stages: {', '.join(stages())})") from None


def properties(stage: str) -> dict[str, dict[str, Any]]:
    return dict(schema(stage)["properties"])


def defaults(stage: str) -> dict[str, Any]:
    return {name: prop["default"] for name, prop in properties(stage).items()}


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A parameter file as a dict: TOML (``[stage]`` sections) or the JSON a resolution wrote."""
    p = Path(path)
    try:
        if p.suffix == ".json":
            return json.loads(p.read_text(encoding="utf-8"))
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ParamsError(f"{p}: parameter file not found") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ParamsError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}") from None


def section(path: str | os.PathLike[str], stage: str) -> dict[str, Any]:
    """The overrides a file holds for ``stage``: its ``[stage]`` section, or the ``params`` of a resolved JSON."""
    data = read_file(path)
    if Path(path).suffix == ".json":
        if data.get("stage") != stage:
            raise ParamsError(f"{path}: resolved parameters of stage {data.get('stage')!r}, not {stage!r}")
        return dict(data["params"])
    unknown = sorted(k for k in data if k not in stages())
    if unknown:
        raise ParamsError(f"{path}: sections {unknown} are not stages ({', '.join(stages())}); "
                          "put each parameter under [stage], e.g. [dataset] per_class = 40")
    return dict(data.get(stage, {}))


def validate(stage: str, values: Mapping[str, Any], where: str) -> None:
    props = properties(stage)
    unknown = sorted(set(values) - set(props))
    if unknown:
        raise ParamsError(f"{where}: {unknown} are not parameters of {stage} (schemas/params/{stage}.schema.json "
                          f"defines {sorted(props)}); remove them or fix the spelling")
    errors = sorted(jsonschema.Draft202012Validator(schema(stage)).iter_errors(dict(values)),
                    key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {e.absolute_path[0]} ({flag(str(e.absolute_path[0]))}): {e.message}" if e.absolute_path
                 else f"  (top level): {e.message}" for e in errors]
        raise ParamsError(f"{where}: invalid {stage} parameters (schemas/params/{stage}.schema.json):\n" + "\n".join(lines))


def resolve(stage: str, layers: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """The schema defaults, overridden by each file in ``layers`` in turn; validated."""
    values = defaults(stage)
    for layer in layers:
        over = section(layer, stage)
        validate(stage, {**values, **over}, str(layer))
        values.update(over)
    validate(stage, values, "the defaults" if not layers else " + ".join(map(str, layers)))
    return values


# ---- command-line flags ------------------------------------------------------------------------------


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar(kind: str | None) -> Any:
    return {"integer": int, "number": float}.get(kind or "", str)


def _list_of(item_type: Any) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [item_type(x) for x in str(text).split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from None
    return parse


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """One flag per schema property; the default is None so that given flags can be told apart."""
    group = parser.add_argument_group(f"{stage} parameters (schemas/params/{stage}.schema.json; files via --params)")
    for name, prop in properties(stage).items():
        help_text = f"{prop.get('description', '')} [default {json.dumps(prop['default'])}]".replace("%", "%%")
        kind = prop.get("type")
        if kind == "boolean":
            group.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind == "array":
            group.add_argument(flag(name), dest=name, nargs="+", type=_list_of(_scalar(prop.get("items", {}).get("type"))),
                               default=None, metavar="V[,V...]", help=help_text)
        elif "enum" in prop:
            group.add_argument(flag(name), dest=name, choices=prop["enum"], default=None, help=help_text)
        else:
            group.add_argument(flag(name), dest=name, type=_scalar(kind), default=None, help=help_text)


def values_from_args(args: argparse.Namespace, stage: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with every flag the user gave applied (list flags may repeat or use commas)."""
    values = dict(base)
    for name, prop in properties(stage).items():
        given = getattr(args, name, None)
        if given is None:
            continue
        values[name] = [x for part in given for x in part] if prop.get("type") == "array" else given
    return values


# ---- the resolved files the Makefile depends on -----------------------------------------------------


def resolved_doc(stage: str, layers: Sequence[str | os.PathLike[str]]) -> str:
    # the values only, not the files they came from: another preset or family that gives a stage the same values
    # leaves its stamp (and everything built from it) alone
    doc = {"stage": stage, "params": resolve(stage, layers)}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


CLIP_KEYS = ("sample_rate", "clip_samples")


def clip_doc(layers: Sequence[str | os.PathLike[str]]) -> str:
    """The clip length the dataset must make: the part of the [features] contract the dataset depends on (its own
    stamp, so that another features parameter does not rebuild the dataset)."""
    features = resolve("features", layers)
    return json.dumps({"stage": "clip", "params": {k: features[k] for k in CLIP_KEYS}}, indent=2, sort_keys=True) + "\n"


def check_family_layers(model: Path | None, preset: Path | None) -> None:
    """The family is the model file's name (``make MODEL=<family>``): the file must say so, a preset must not choose one."""
    if preset is not None and "family" in section(preset, "train"):
        raise ParamsError(f"{preset}: [train] family is chosen with make MODEL=<family> (pipeline/params/models/), "
                          "not by a preset; remove it")
    if model is not None:
        family = {**defaults("train"), **section(model, "train")}["family"]
        if family != model.stem:
            raise ParamsError(f"{model}: [train] family is {family!r}, but the file is the {model.stem!r} family; "
                              f"set family = {model.stem!r} in it")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model-family overrides (pipeline/params/models/<family>.toml)")
    p.add_argument("--preset", type=Path, help="preset overrides (pipeline/params/presets/<name>.toml)")
    p.add_argument("--out-dir", type=Path, help="write <stage>.json for every stage, each only if it changed")
    p.add_argument("--show", metavar="STAGE", help="print one stage's resolved values")
    args = p.parse_args(argv)
    layers = [x for x in (args.model, args.preset) if x is not None]
    try:
        check_family_layers(args.model, args.preset)
        if args.show:
            print(resolved_doc(args.show, layers), end="")
        if args.out_dir is not None:
            docs = {stage: resolved_doc(stage, layers) for stage in stages()}  # every file valid before any is written
            docs["clip"] = clip_doc(layers)
            changed = [s for s, text in docs.items() if write_text_if_changed(args.out_dir / f"{s}.json", text)]
            if changed:
                print(f"params: {', '.join(changed)} changed ({' + '.join(map(str, layers)) or 'defaults'})")
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
