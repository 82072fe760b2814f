"""The README's "What Composer promises" section names, for each promise, the tests that hold it: every test it
names exists, so a renamed or deleted test cannot leave a promise unheld without this test failing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def promises_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## What Composer promises")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def named_tests(section: str) -> list[tuple[str, str]]:
    """(file, test) pairs: each backquoted `test_...` name belongs to the last `test_*.py` file named before it."""
    pairs, current = [], None
    for token in re.finditer(r"(test_\w+\.py)|`(test_\w+)`", section):
        if token.group(1):
            current = token.group(1)
        else:
            assert current, f"{token.group(2)} is named before any test file"
            pairs.append((current, token.group(2)))
    return pairs


def test_readme_promises_name_tests_that_exist():
    section = promises_section()
    pairs = named_tests(section)
    assert len(pairs) >= 30 and section.count("\n- **") >= 7
    missing = []
    for file, name in pairs:
        path = ROOT / "tests" / file
        tree = ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else None
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)} if tree else set()
        if name not in defined:
            missing.append(f"{file}::{name}")
    assert not missing, f"the README names tests that do not exist: {missing}"


def test_the_parser_reads_files_and_names():
    assert named_tests("(a_test.py) test_x.py: `test_a`, `test_b`; test_y.py: `test_c`") == [
        ("test_x.py", "test_a"), ("test_x.py", "test_b"), ("test_y.py", "test_c")]
