"""YAML with line numbers, and the value checkers whose errors name the file, line and key
path (``studies/x.yaml:7: fixed.attention: ...``).

Line numbers come from PyYAML's node graph, kept in a map from key path to line next to the
plain data. Reading, with the limits that turn a hostile file into one error line, is
:func:`ablate.yaml_read.read_yaml` (layer 0, so the detection data YAML in ``data/`` is read
the same way). A dict that arrives as JSON (the Ray boundary, a spec read back from the
database) goes through the same checkers with ``<spec>`` as the file name and no line."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError, did_you_mean
from ablate.study.space import (
    dotted,
    thaw,
)
from ablate.study.schema import MAX_BATCH, MAX_CLIP, MAX_DECAY, MAX_LR, RECIPE_NAMES, TRAIN_KEYS, _RESERVED
# The reader's parts stay importable from here (sections, space_file, load and tests use them).
from ablate.yaml_read import _index_lines, _Loader  # noqa: F401
from ablate.yaml_read import read_yaml as _read_yaml  # noqa: F401


@dataclasses.dataclass(frozen=True)
class _Doc:
    """Where values came from: a file name, its key-path → line map, and the folder for paths."""

    source: str
    lines: Mapping[tuple, int]
    base_dir: Path
    prefix: tuple = ()

    def at(self, *prefix: str | int) -> _Doc:
        return dataclasses.replace(self, prefix=self.prefix + prefix)

    def error(self, path: Sequence[str | int], what: str) -> ConfigError:
        full = self.prefix + tuple(path)
        line = None
        for n in range(len(full), -1, -1):
            line = self.lines.get(full[:n])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line is not None else self.source
        key = dotted(full)
        if not key.isprintable():  # a quoted key may hold a line break or a control character
            key = key.encode("unicode_escape").decode("ascii")
        return ConfigError(f"{where}: {key}: {what}" if key else f"{where}: {what}")


def _mapping(doc: _Doc, path: tuple, value: Any, allowed: Sequence[str] | None = None,
             required: Sequence[str] = (), what: str = "a mapping") -> dict[str, Any]:
    """Check that ``value`` is a mapping with string keys, only ``allowed`` ones, all ``required``."""
    if not isinstance(value, Mapping):
        keys = f" with keys {', '.join(allowed)}" if allowed else ""
        raise doc.error(path, f"must be {what}{keys}, got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise doc.error(path + (str(key),), f"keys must be strings, got {key!r}")
        if allowed is not None and key not in allowed:
            raise doc.error(path + (key,), f"unknown key {key!r}, allowed: {', '.join(allowed)}"
                            + did_you_mean(key, allowed))
    for key in required:
        if key not in value:
            raise doc.error(path + (key,), "required key is missing")
    return dict(value)


def _show(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return f"{type(value).__name__ if not isinstance(value, Mapping) else 'a mapping'} {thaw(value)!r}"
    return repr(value)


def _int(doc: _Doc, path: tuple, value: Any, low: int | None = None, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        rng = (f" in [{low}, {high}]" if low is not None and high is not None
               else f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
        raise doc.error(path, f"must be an integer{rng}, got {_show(value)}")
    return value


def _float(doc: _Doc, path: tuple, value: Any, low: float | None = None, high: float | None = None,
           open_low: bool = False, open_high: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = ((low is None or (value > low if open_low else value >= low))
              and (high is None or (value < high if open_high else value <= high)))
    if not ok:
        if low is not None and high is not None:
            rng = f" in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        elif low is not None:
            rng = f" {'>' if open_low else '>='} {low}"
        elif high is not None:
            rng = f" {'<' if open_high else '<='} {high}"
        else:
            rng = ""
        raise doc.error(path, f"must be a number{rng}, got {_show(value)}")
    return float(value)


def _bool(doc: _Doc, path: tuple, value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(path, f"must be true or false, got {_show(value)}")
    return value


def _str(doc: _Doc, path: tuple, value: Any) -> str:
    if not isinstance(value, str):
        raise doc.error(path, f"must be a string, got {_show(value)}")
    return value


def _one_of(doc: _Doc, path: tuple, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
        raise doc.error(path, f"must be one of {', '.join(map(repr, allowed))}, got {_show(value)}{hint}")
    return value


def _json(doc: _Doc, path: tuple, value: Any) -> Any:
    """Check that ``value`` is plain JSON (YAML can also produce dates, sets, ...)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise doc.error(path + (str(k),), f"keys must be strings, got {k!r}")
            _json(doc, path + (k,), v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _json(doc, path + (i,), v)
    elif isinstance(value, float) and not math.isfinite(value):
        raise doc.error(path, f"must be a finite number, got {value!r}")
    elif not isinstance(value, (type(None), bool, int, float, str)):
        raise doc.error(path, f"must be null, a boolean, a number, a string, a list or a mapping, "
                              f"got {type(value).__name__} {value!r}")
    return value


def _check_not_reserved(doc: _Doc, path: tuple, key: str) -> None:
    if key in _RESERVED:
        raise doc.error(path, f"{key!r} is set from {_RESERVED[key]}, allowed: any other arch key, a family "
                              f"option or one of {', '.join(sorted(TRAIN_KEYS))}")


def _check_train_value(doc: _Doc, path: tuple, key: str, value: Any) -> Any:
    """A training key set in fixed/grid/params obeys the same rules as in ``train``."""
    if key == "lr":
        return _float(doc, path, value, 0, MAX_LR, open_low=True)
    if key == "weight_decay":
        return _float(doc, path, value, 0, MAX_DECAY)
    if key == "label_smoothing":
        return _float(doc, path, value, 0, 1, open_high=True)
    if key == "batch_size":
        return _int(doc, path, value, 1, MAX_BATCH)
    if key == "warmup_epochs":
        return _int(doc, path, value, 0)
    if key == "recipe":
        return _one_of(doc, path, value, RECIPE_NAMES)
    if key == "randaugment":
        return _randaugment(doc, path, value)
    if key in ("random_erasing", "mixup", "cutmix"):
        return _float(doc, path, value, 0, 1)
    if key == "clip_grad":
        return _float(doc, path, value, 0, MAX_CLIP)
    if key == "ema_decay":
        return _float(doc, path, value, 0, 1, open_high=True)
    raise AssertionError(key)  # pragma: no cover - keys come from TRAIN_KEYS


_RANDAUGMENT_RE = re.compile(r"rand(-(m\d+(\.\d+)?|n\d+|mstd\d+(\.\d+)?|mmax\d+(\.\d+)?|inc[01]|w\d+|p\d+(\.\d+)?))*")


def _randaugment(doc: _Doc, path: tuple, value: Any) -> str:
    """timm's RandAugment string (``rand-m9-mstd0.5-inc1``), or empty for none."""
    text = _str(doc, path, value) if value != "" else ""
    if text and not _RANDAUGMENT_RE.fullmatch(text):
        raise doc.error(path, f"must be timm's RandAugment spec or '' for none, got {text!r}, allowed: e.g. "
                              "'rand-m9-mstd0.5-inc1' (magnitude 9, its std 0.5, increasing)")
    return text

