"""``python -m pulsar2.emulator build --config X`` (see pulsar2.emulator.cli)."""

from pipeline.core.cli import run_main
from pulsar2.emulator.cli import main

if __name__ == "__main__":
    raise SystemExit(run_main(main))
