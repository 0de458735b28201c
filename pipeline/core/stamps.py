"""Value stamps: files that change exactly when a value make cannot see as a file changes.

Make compares modification times, so a value (which seed files exist and what they hold, which holdout
folder is evaluated) becomes a file rewritten only when the value changes; rules that depend on it rerun
exactly then. The Makefile runs these rules on every invocation (``make -n`` too), and an unchanged value
leaves the stamp's mtime alone.

    python -m pipeline.core.stamps tree data/demo-seeds build/stamps/seeds.json    # sha256 of every file
    python -m pipeline.core.stamps value build/stamps/holdout.txt build/holdout-tts
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.io import sha256_file, write_text_if_changed


def tree_listing(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (hidden files and folders skipped)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    t = sub.add_parser("tree", help="the listing (path -> sha256) of a folder")
    t.add_argument("dir", type=Path)
    t.add_argument("out", type=Path)
    v = sub.add_parser("value", help="a value given on the command line")
    v.add_argument("out", type=Path)
    v.add_argument("value")
    args = p.parse_args(argv)
    if args.kind == "tree":
        try:
            text = json.dumps(tree_listing(args.dir), indent=1, ensure_ascii=False) + "\n"
        except FileNotFoundError as e:
            print(f"error: {e}; give an existing folder", file=sys.stderr)
            return 2
    else:
        text = args.value + "\n"
    write_text_if_changed(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
