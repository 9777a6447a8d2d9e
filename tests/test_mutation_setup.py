"""`dev.py mutants` (scripts/mutants.py): each module it mutates exists with its fast tests,
those tests need no database, and the only mutants it leaves out of a score are those
that change nothing but an error's wording."""

from __future__ import annotations

import ast

import pytest

from scripts import mutants
from tests.conftest import ROOT

# Fixtures that start or need the database, the app or the fake Strava: not fast.
SLOW_FIXTURES = {"database", "database_url", "client", "app", "make_app", "strava", "fake"}


@pytest.mark.parametrize("name", sorted(mutants.TARGETS))
def test_each_module_is_run_with_fast_tests_that_exist(name: str) -> None:
    target = mutants.TARGETS[name]
    assert (ROOT / target.module).is_file()
    assert target.tests
    for test_file in target.tests:
        tree = ast.parse((ROOT / test_file).read_text())
        tests = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        ]
        assert tests, test_file
        for test in tests:
            fixtures = {a.arg for a in test.args.args}
            assert not fixtures & SLOW_FIXTURES, f"{test_file}::{test.name}"


def function(source: str) -> ast.AST:
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


ORIGINAL = """
def f(x):
    if x < 0:
        raise ValueError(f"x must be positive, not {x}")
    if x > 9:
        raise FieldError("x", "x is too large")
    if x == 5:
        raise FieldError("x", "x must be one of: " + ", ".join(NAMES))
    return {"x": x, "why": "fine"}
"""


@pytest.mark.parametrize(
    ("old", "new", "left_out"),
    [
        # The error's text only: left out of the score.
        ('"x must be positive, not ', '"XXx must be positive, not XX', True),
        ('f"x must be positive, not {x}"', "None", True),
        ('"x is too large"', '"X IS TOO LARGE"', True),
        ('"x must be one of: "', '"XXx must be one of: XX"', True),
        ('", ".join', '"XX, XX".join', True),
        # Anything else counts: the condition, the error's kind, a value returned.
        ("x < 0", "x <= 0", False),
        ("raise ValueError", "raise TypeError", False),
        ('FieldError("x"', 'FieldError("XXxXX"', False),  # a field's name, not wording
        ('"x is too large")', '"x is too large", 1)', False),
        ("join(NAMES)", "join(OTHER_NAMES)", False),
        ("x == 5", "x == 6", False),
        ('{"x": x', '{"XXxXX": x', False),
        ('"fine"', '"XXfineXX"', False),
        ("return {", "return None and {", False),
    ],
)
def test_only_an_errors_wording_is_left_out(old: str, new: str, left_out: bool) -> None:
    assert old in ORIGINAL
    changed = ORIGINAL.replace(old, new)
    assert mutants.wording_only(function(ORIGINAL), function(changed)) is left_out
    assert mutants.wording_only(function(ORIGINAL), function(ORIGINAL)) is False
