"""The error-line helpers every module shares (ablate/errors.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.errors import exception_line, shown_path


@pytest.mark.parametrize(("given", "shown"), [
    ("runs/model.safetensors", "runs/model.safetensors"),
    (Path("a b/ü.pt"), "a b/ü.pt"),
    ("evil\nname.pt", "'evil\\nname.pt'"),
    ("bell\x07.pt", "'bell\\x07.pt'"),
    (b"bytes.pt", "bytes.pt"),
])
def test_shown_path_keeps_a_printable_path_and_escapes_control_characters(given, shown):
    assert shown_path(given) == shown
    assert "\n" not in shown_path(given)


def test_exception_line_is_one_line_and_bounded():
    assert exception_line(ValueError("first\n  second\tthird")) == "first second third"
    assert exception_line(KeyError()) == "KeyError"
    long = exception_line(RuntimeError("x" * 500), limit=50)
    assert long == "x" * 50 + "..."
