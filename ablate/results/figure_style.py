"""What a colour, a marker and an empty plot mean in every figure of a study.

One rule per visual channel, shared by the dashboard and the HTML report:

* **colour = attention family.** Each registered family owns one colour, given by its place
  in the sorted registry, so ``focal`` is the same blue in every study, on every page, and
  whichever trial states are shown. Mixed families (``focal+softmax``) and names the
  registry does not know get the colours after those, in sorted order of the names the
  study holds (all its trials, whatever is filtered), so they too stay put while states
  are toggled.
* **red = the Pareto front**, orange = indistinguishable from it, grey = a configuration
  mean. No family colour is any of these, so a PRUNED trial can never look like the front.
* **marker = trial state** (circle COMPLETE, triangle PRUNED, x FAIL, open diamond
  RUNNING).
* **an empty or flat plot says why** in a sentence drawn inside it (:func:`with_note`).

Nothing here reads a storage or imports torch: the registry's family names are kept in
:data:`FAMILIES`, which a test holds equal to :mod:`ablate.attention`'s registry.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ablate.metrics import metric

__all__ = ["FRONT_COLOR", "NEAR_COLOR", "MEAN_COLOR", "FAMILY_PALETTE", "FAMILIES", "STATE_SYMBOL", "registered_families",
           "family_colors", "family_of", "label_of", "base_layout", "with_note", "note_of", "spans_decades", "IMPORTANCE_MIN_TRIALS"]

#: The Pareto front (line, rings, error bars).
FRONT_COLOR = "#d62728"
#: Configurations indistinguishable from the front.
NEAR_COLOR = "#ff7f0e"
#: Configuration means off the front.
MEAN_COLOR = "#555555"
#: Family colours: Plotly's default sequence without its red, orange and grey (which mean
#: the front, "near the front" and "a mean"), then darker tones of the same hues.
FAMILY_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#637939", "#7b4173", "#3182bd", "#31a354", "#756bb1", "#8c6d31", "#0b7285", "#5f3dc4",
)
#: Marker per trial state: the state is told by shape, never by colour.
STATE_SYMBOL: Mapping[str, str] = {"COMPLETE": "circle", "PRUNED": "triangle-down", "FAIL": "x",
                                   "RUNNING": "diamond-open", "WAITING": "square-open"}
#: Parameter importance is drawn from this many COMPLETE trials whose settings vary. Optuna
#: computes fANOVA from two, but a forest fitted to fewer points than this ranks noise.
IMPORTANCE_MIN_TRIALS = 5


#: The attention registry's names, sorted: the order that fixes each family's colour. Written
#: out because importing the registry imports torch (3 s, more than a whole HTML report
#: otherwise takes); tests/results/test_figures.py checks it equals the registry, so a new
#: family fails that test until it is listed here and so gets its own colour.
FAMILIES: tuple[str, ...] = ("biformer", "flatten", "focal", "lavit", "softmax")


@functools.lru_cache(maxsize=1)
def registered_families() -> tuple[str, ...]:
    """The live attention registry's names, sorted (imports torch; :data:`FAMILIES` is its copy)."""
    from ablate.attention import list_attention

    return tuple(sorted(list_attention()))


def family_colors(present: Iterable[str], registry: Sequence[str] | None = None) -> dict[str, str]:
    """A colour for every family in ``present`` and every registered one.

    Registered families keep their colour across studies; the other names (mixtures such as
    ``focal+softmax``, ``-`` for none) follow in sorted order. Pass every family of the study,
    not only the shown ones, so that filtering never shifts a colour.

    Args:
        present: family names found in the study (any order, repeats allowed).
        registry: the registered names (default: :data:`FAMILIES`).
    """
    known = sorted(set(registry if registry is not None else FAMILIES))
    others = sorted(set(present) - set(known))
    return {name: FAMILY_PALETTE[i % len(FAMILY_PALETTE)] for i, name in enumerate([*known, *others])}


def with_note(figure: dict[str, Any], text: str | None) -> dict[str, Any]:
    """``figure`` with ``text`` written across its middle (why it is empty or flat), if any.

    The sentence is also kept in ``layout.meta.note`` so a page or a test can read it
    without parsing annotations.
    """
    if not text:
        return figure
    layout = figure.setdefault("layout", {})
    layout.setdefault("annotations", []).append({
        "text": text, "name": "note", "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5, "showarrow": False,
        "font": {"size": 14, "color": "#4b5563"}, "bgcolor": "rgba(255,255,255,0.85)"})
    meta = layout.get("meta") if isinstance(layout.get("meta"), dict) else {}
    layout["meta"] = {**meta, "note": text}
    return figure


def note_of(figure: Mapping[str, Any]) -> str | None:
    """The sentence :func:`with_note` put on a figure, or None."""
    meta = (figure.get("layout") or {}).get("meta")
    return meta.get("note") if isinstance(meta, Mapping) else None


def spans_decades(values: Iterable[Any], decades: float = 1.0) -> bool:
    """Whether positive ``values`` span at least ``decades`` powers of ten (a log axis reads better).

    Zero, negative or missing values rule a log axis out (they have no place on it).
    """
    finite = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            finite.append(f)
    if not finite or min(finite) <= 0:
        return False
    return math.log10(max(finite) / min(finite)) >= decades


def label_of(key: str) -> str:
    """A readable axis label for a metric or cost key."""
    found = metric(key)
    return found.label if found is not None else key


def family_of(params: Mapping[str, Any], attrs: Mapping[str, Any]) -> str:
    """The attention family a trial used (per-stage lists joined), for colouring."""
    arch = attrs.get("arch") or {}
    value = params.get("attention", arch.get("attention") if isinstance(arch, Mapping) else None)
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        distinct = list(dict.fromkeys(str(v) for v in value))
        return "+".join(distinct)
    return str(value)


def base_layout(title: str, xtitle: str, ytitle: str, height: int, **extra: Any) -> dict[str, Any]:
    """The layout every figure starts from: white ground, light grid, titled axes, no zero lines."""
    return {"title": {"text": title}, "xaxis": {"title": {"text": xtitle}, "gridcolor": "#eee", "zeroline": False},
            "yaxis": {"title": {"text": ytitle}, "gridcolor": "#eee", "zeroline": False}, "height": height,
            "plot_bgcolor": "white", "paper_bgcolor": "white", "hovermode": "closest",
            "margin": {"l": 60, "r": 60, "t": 50, "b": 50}, **extra}
