"""YAML with line numbers, and the value checkers whose errors name the file, line and key
path (``studies/x.yaml:7: fixed.attention: ...``).

Line numbers come from PyYAML's node graph (:func:`yaml.compose`), kept in a map from key
path to line next to the plain data. A dict that arrives as JSON (the Ray boundary, a spec
read back from the database) goes through the same checkers with ``<spec>`` as the file
name and no line."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import ConfigError, did_you_mean
from ablate.study.space import (
    dotted,
    thaw,
)
from ablate.study.schema import RECIPE_NAMES, TRAIN_KEYS, _RESERVED


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


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
        return ConfigError(f"{where}: {key}: {what}" if key else f"{where}: {what}")


def _read_yaml(path: Path, display: str) -> tuple[Any, dict[tuple, int]]:
    """Plain data plus a map from key path to 1-based line (the key's line for mapping entries)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found, allowed: an existing YAML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{display}: is a folder, allowed: a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{display}: cannot read: {err}") from None
    loader = _Loader(text)
    lines: dict[tuple, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _index_lines(node, (), lines, display)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{display}:{mark.line + 1}" if mark is not None else display
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{display}: invalid YAML: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], display: str, depth: int = 0) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if depth > 64:  # aliases can make cycles; nothing real is this deep
        return
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            child = path + (key,)
            if key in seen:
                raise ConfigError(f"{display}:{key_node.start_mark.line + 1}: {dotted(child)}: "
                                  f"duplicate key, allowed: each key once")
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines, display, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index_lines(item, path + (i,), lines, display, depth + 1)


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
        return _float(doc, path, value, 0, open_low=True)
    if key == "weight_decay":
        return _float(doc, path, value, 0)
    if key == "label_smoothing":
        return _float(doc, path, value, 0, 1, open_high=True)
    if key == "batch_size":
        return _int(doc, path, value, 1)
    if key == "warmup_epochs":
        return _int(doc, path, value, 0)
    if key == "recipe":
        return _one_of(doc, path, value, RECIPE_NAMES)
    if key == "randaugment":
        return _randaugment(doc, path, value)
    if key in ("random_erasing", "mixup", "cutmix"):
        return _float(doc, path, value, 0, 1)
    if key == "clip_grad":
        return _float(doc, path, value, 0)
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

