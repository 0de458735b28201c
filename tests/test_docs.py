"""docs/faults.md names a test for every case: each named test exists (``name_*`` names a family)."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_every_test_named_in_the_fault_table_exists() -> None:
    text = (ROOT / "docs" / "faults.md").read_text(encoding="utf-8")
    named = re.findall(r"`([a-z_]+/test_[a-z_]+\.py)::([A-Za-z0-9_]+)(\*?)", text)
    assert len(named) >= 20
    missing = []
    for file, name, star in named:
        path = ROOT / "tests" / file
        pattern = rf"^def {name}\w*\(" if star else rf"^def {name}\("
        if not path.is_file() or not re.search(pattern, path.read_text(encoding="utf-8"), re.M):
            missing.append(f"{file}::{name}{star}")
    assert not missing, missing
