"""The shell scripts that run on the board, one file each (POSIX sh, checked by shellcheck in `make lint`).

    from device.remote import script
    run_script(conn, script("listen"), [root, wav, *options], "listen")
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def script(name: str) -> str:
    return (HERE / f"{name}.sh").read_text(encoding="utf-8")
