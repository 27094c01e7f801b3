"""Golden files: the exact output for a small fixture, compared as a diff, rewritten only with a flag."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(name: str, actual: bytes, regenerate: bool) -> None:
    """Compare ``actual`` with tests/golden/``name``; with --regenerate-golden, write it instead."""
    path = GOLDEN / name
    if regenerate:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
        return
    if not path.exists():
        pytest.fail(f"no golden file {path}: run pytest --regenerate-golden and review the new file")
    expected = path.read_bytes()
    if expected != actual:
        diff = difflib.unified_diff(
            expected.decode("utf-8", "replace").splitlines(),
            actual.decode("utf-8", "replace").splitlines(),
            f"golden/{name}",
            "actual",
            lineterm="",
        )
        pytest.fail("output differs from the golden file (pytest --regenerate-golden rewrites it):\n" + "\n".join(diff))
