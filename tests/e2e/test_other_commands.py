"""Any user's commands end to end: three English commands (not the Spanish demo), make all eval, smoke preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

WORDS = 'language = "en"\n\n[words]\nLIGHTS = "lights"\nMUSIC = "music"\nSTOP = "stop"\n'


def test_make_all_eval_on_three_english_commands(tmp_path: Path) -> None:
    words = tmp_path / "words.toml"
    words.write_text(WORDS)
    seeds = tmp_path / "my seeds"
    subprocess.run([sys.executable, "-m", "pipeline.authoring.demo_seeds", "--words", str(words), "--out", str(seeds)],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    build = tmp_path / "build"
    r = subprocess.run(["make", "--no-print-directory", "all", "eval", "PARAMS=smoke", "RUNNER=local", f"SEEDS={seeds}",
                        f"BUILD={build}"], cwd=ROOT, capture_output=True, text=True, timeout=3000,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    classes = ["FONDO", "LIGHTS", "MUSIC", "STOP"]
    assert json.loads((build / "runtime" / "runtime.json").read_text())["classes"] == classes
    vocab = json.loads((build / "stamps" / "vocabulary.json").read_text())
    assert vocab["language"] == "en" and vocab["words"] == {"LIGHTS": "lights", "MUSIC": "music", "STOP": "stop"}
    # the synthetic speakers, the development and evaluation sets all say the user's words, in English
    assert sorted(p.name for p in (build / "voices").iterdir() if p.is_dir()) == classes
    for held in ("holdout-dev", "holdout-tts"):
        assert sorted(p.name for p in (build / held).iterdir() if p.is_dir()) == classes
        voices = json.loads((build / held / "manifest.json").read_text())["eval_voices"]
        assert voices and all(v.startswith("en+") for v in voices), voices
    summary = json.loads((build / "eval" / "summary.json").read_text())
    assert summary["n_keyword_clips"] > 0 and set(summary["per_class"]) >= {"LIGHTS", "MUSIC", "STOP"}
