"""Text tables that fit the terminal: readable numbers, headers never broken inside a word,
and columns chosen (``--columns``) or hidden (least important first) with a note saying so.

A rich table narrower than its content folds cells and headers anywhere
(``focal_leve / l``, ``COMPLE / TE``). Here each column's narrowest width is what keeps
every header word and every number whole; columns are taken in order of importance while
those widths fit, and rich only wraps at spaces within that. Nothing here reads a study.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from ablate.errors import ConfigError

__all__ = ["TextColumn", "fit", "flops_text", "count_text", "seconds_text", "terminal_width", "chosen_columns",
           "render", "wrapped", "column_widths"]

#: Width of a column's border and padding in rich's default box (``│ x ``), and the closing border.
_PER_COLUMN = 3
_EDGE = 1
_SPACE = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class TextColumn:
    """One column: its name for ``--columns``, its header, its cells, whether cells may wrap at spaces."""

    name: str
    header: str
    cells: tuple[str, ...]
    wrap: bool = False  # numbers and states never wrap; settings, lists and messages may, at spaces
    justify: str = "left"

    @property
    def min_width(self) -> int:
        """The narrowest width that breaks no header word and, for cells, no word (``wrap``) or no cell."""
        if not self.wrap:  # rich wraps neither the cells nor the header of such a column
            return self.natural_width
        words = [len(w) for w in _SPACE.split(self.header) if w] or [1]
        cell = max((len(w) for c in self.cells for w in _SPACE.split(c) if w), default=1)
        cell = min(cell, 24)  # a long message or path folds rather than pushing every other column out
        return max(max(words), cell, 1)

    @property
    def natural_width(self) -> int:
        return max(len(self.header), max((len(c) for c in self.cells), default=0), 1)


def terminal_width() -> int | None:
    """Columns to fit: ``COLUMNS`` when set, the terminal's width when stdout is one, else None
    (a pipe or a file: no limit, every column is printed)."""
    raw = os.environ.get("COLUMNS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    try:
        if sys.stdout.isatty():
            return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return None


def chosen_columns(raw: str | None, allowed: Sequence[str]) -> list[str] | None:
    """``--columns a,b,c`` as a list of known names in that order (None: not given).

    Raises:
        ConfigError: an empty list or a name not in ``allowed`` (named, with the allowed list).
    """
    if raw is None:
        return None
    from ablate.errors import did_you_mean

    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--columns: no column named, allowed: a comma-separated list of {', '.join(allowed)}")
    for n in names:
        if n not in allowed:
            shown = n if n.isprintable() else n.encode("unicode_escape", "backslashreplace").decode("ascii")
            raise ConfigError(f"--columns: unknown column '{shown}', allowed: {', '.join(allowed)}"
                              + did_you_mean(n, allowed))
    return list(dict.fromkeys(names))


def fit(columns: Sequence[TextColumn], width: int | None,
        order: Sequence[str] | None = None) -> tuple[list[TextColumn], list[str]]:
    """The columns to print (in table order) and the names of those left out for lack of width.

    ``order`` ranks the columns, most important first (default: as given); the first is
    always kept. ``width`` None keeps every column.
    """
    ranked = sorted(columns, key=lambda c: order.index(c.name) if order and c.name in order else len(columns))
    if width is None:
        return list(columns), []
    kept: set[str] = set()
    used = _EDGE
    for i, col in enumerate(ranked):
        need = col.min_width + _PER_COLUMN
        if i == 0 or used + need <= width:
            kept.add(col.name)
            used += need
    return [c for c in columns if c.name in kept], [c.name for c in ranked if c.name not in kept]


def render(columns: Sequence[TextColumn], width: int | None) -> str:
    """The table as text, at most ``width`` columns wide (the natural width when None)."""
    import io

    from rich.console import Console
    from rich.table import Table

    widths = column_widths(columns, width)
    table = Table(show_edge=True)
    n_rows = max((len(c.cells) for c in columns), default=0)
    for col, w in zip(columns, widths):
        table.add_column(col.header, width=w, no_wrap=not col.wrap, overflow="fold",
                         justify=col.justify)  # type: ignore[arg-type]
    for i in range(n_rows):
        table.add_row(*(c.cells[i] if i < len(c.cells) else "" for c in columns))
    out = io.StringIO()
    total = _EDGE + sum(w + _PER_COLUMN for w in widths)
    console = Console(file=out, width=total, force_terminal=False, no_color=True, highlight=False, emoji=False)
    console.print(table)
    return out.getvalue()


def column_widths(columns: Sequence[TextColumn], width: int | None) -> list[int]:
    """Each column's width: its natural width, the widest wrapping ones narrowed (never below
    their :attr:`~TextColumn.min_width`) until the table fits ``width``.

    Rich narrows only the widest wrapping columns and then every column evenly, below what
    keeps a header word whole; hence the widths are set here.
    """
    widths = [c.natural_width for c in columns]
    if width is None:
        return widths
    excess = _EDGE + sum(w + _PER_COLUMN for w in widths) - width
    while excess > 0:
        slack = [(w - c.min_width, i) for i, (w, c) in enumerate(zip(widths, columns)) if c.wrap and w > c.min_width]
        if not slack:
            break
        _, i = max(slack, key=lambda t: (widths[t[1]], t[0]))  # the widest column that can still narrow
        widths[i] -= 1
        excess -= 1
    return widths


def _significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, no exponent for 0.001 to 99 999."""
    value = float(f"{value:.{digits}g}")  # 0.9997 -> 1.0 first, so it prints 1.00 and not 1.000
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def _scaled(value: float, units: Sequence[tuple[float, str]]) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    for i, (scale, suffix) in enumerate(units):
        if abs(value) >= scale or i == len(units) - 1:
            text = _significant(value / scale)
            if abs(float(text)) >= 1000 and i > 0:  # 999.7 M rounds to 1000 M: 1.00 G
                scale, suffix = units[i - 1]
                text = _significant(value / scale)
            return f"{text} {suffix}".rstrip()
    return _significant(value)  # pragma: no cover - the last unit takes the rest


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1.0, ""))


def flops_text(gflops: Any) -> str:
    """A count of GFLOPs (multiply-adds, 1e9) in readable units: 0.004683 -> ``4.68 M``, 36.01 -> ``36.0 G``."""
    if not isinstance(gflops, (int, float)) or isinstance(gflops, bool):
        return "" if gflops is None else str(gflops)
    return _scaled(gflops * 1e9, _SI)


def count_text(millions: Any) -> str:
    """A count in millions (``params_m``) in readable units: 6.048 -> ``6.05 M``, 0.0853 -> ``85.3 K``."""
    if not isinstance(millions, (int, float)) or isinstance(millions, bool):
        return "" if millions is None else str(millions)
    return _scaled(millions * 1e6, _SI)


def seconds_text(seconds: Any) -> str:
    """Wall time: ``42s``, ``3m05s``, ``2h04m``."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def wrapped(text: str, width: int | None) -> str:
    """``text`` broken at spaces to ``width`` columns (as is when None), so no word is cut at the edge."""
    if width is None or len(text) <= width:
        return text
    import textwrap

    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)
