"""``key=value`` overrides from the command line (``ablate run STUDY train.epochs=1
data.path=/data/imagenet``), applied to a study file's mapping before it is validated.

An override is a dotted key path into the study mapping and a value read as YAML (a scalar
or a flow collection: ``grid.window_size=[7,14]``) by the same guarded reader as the file
(:mod:`ablate.yaml_read`: size, encoding, node, depth and number limits; the safe
constructor, so no Python tags). Applying overrides to the raw mapping means every check of
the file (unknown keys with their "did you mean", types, bounds, feasibility against the
model builders) judges them too; an error in a key an override set names the override::

    studies/x.yaml: override train.epochs=abc: train.epochs: must be an integer in [1, 10000], got 'abc'

Rules a user can rely on:

- the last path segment is set; missing sections on the way are created (``proxy.epochs=2``
  on a study without ``proxy:``); a segment that is an integer indexes an existing list;
- a relative ``data.path`` or ``space`` is taken from the current folder (where the command
  was typed), not from the study file's folder; ``~`` is expanded;
- at ``--scale proxy`` an override wins over the study's ``proxy:`` section: ``train.epochs=1``
  trains 1 epoch even when ``proxy.epochs`` is set (that proxy key is dropped), and so do
  ``train.<key>``, ``data.image_size``, ``repeats`` and ``fixed.<arch key>``. A grid key's
  proxy values (``proxy.grid``) are not dropped: override them with ``proxy.grid.<key>=[...]``;
- the same key given twice is refused (which one was meant?).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ablate.errors import ConfigError
from ablate.study.doc import _Doc
from ablate.yaml_read import MAX_DEPTH, _decode, _Loader, _measure

__all__ = ["Override", "OverrideDoc", "apply_overrides", "parse_overrides", "shown_overrides"]

#: Longest ``key=value`` accepted: a value is a setting, not a file (a study file may be 2 MiB).
MAX_OVERRIDE_CHARS = 64 * 1024
#: Most overrides on one command line.
MAX_OVERRIDES = 100
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*|\d+")
#: Keys whose relative path values are taken from the current folder rather than the study's.
_PATH_KEYS = (("data", "path"), ("space",))
_ALLOWED = "allowed: key=value with a dotted key into the study file, e.g. train.epochs=1 or data.path=/data/imagenet"


@dataclasses.dataclass(frozen=True)
class Override:
    """One ``key=value`` from the command line: its key path, the YAML value and how to show it."""

    path: tuple[str | int, ...]
    value: Any
    text: str  # ``key=value`` as typed, with a storage URL's password masked
    raw: str = ""  # the value as typed (secrets and all): scrubbed from messages that quote it

    @property
    def key(self) -> str:
        return ".".join(str(p) for p in self.path)


@dataclasses.dataclass(frozen=True)
class OverrideDoc(_Doc):
    """A :class:`~ablate.study.doc._Doc` whose errors in a key an override set name that override
    (``override train.epochs=abc: train.epochs: ...``) instead of the file's line, which no longer
    holds the value."""

    overrides: tuple[Override, ...] = ()

    def error(self, path: Sequence[str | int], what: str) -> ConfigError:
        return ConfigError(self._scrubbed(str(self._error(path, what))))

    def _scrubbed(self, message: str) -> str:
        """``message`` without the passwords of override values that look like URLs (a value
        the schema refuses is quoted in the message: ``got ['postgresql://u:pw@h/db']``)."""
        for o in self.overrides:
            if "://" in o.raw or "@" in o.raw:
                from ablate.storage import scrub_secrets

                message = scrub_secrets(message, o.raw)
                for part in re.split(r"[\s,\[\]{}'\"]+", o.raw):  # a URL inside a flow list or mapping
                    if "://" in part or "@" in part:
                        message = scrub_secrets(message, part)
        return message

    def _error(self, path: Sequence[str | int], what: str) -> ConfigError:
        full = self.prefix + tuple(path)
        for o in reversed(self.overrides):  # the last override that set this key (or a section above it)
            if full[:len(o.path)] == o.path or (o.path[:len(full)] == full and full):
                plain = _Doc(self.source, {}, self.base_dir, self.prefix).error(path, what)
                text = str(plain)[len(self.source) + 2:]
                return ConfigError(f"{self.source}: override {o.text}: {text}")
        if self.overrides:  # a check across keys (warmup_epochs <= epochs) may fail because of one
            return ConfigError(f"{super().error(path, what)} (with {' '.join(o.text for o in self.overrides)})")
        return super().error(path, what)


def shown_value(text: str) -> str:
    """A value as messages and the start-up echo show it: a storage URL's password masked."""
    if "://" in text or "@" in text:
        from ablate.storage import display_url

        return display_url(text)
    return text


def parse_overrides(items: Sequence[str], source: str) -> tuple[Override, ...]:
    """Parse ``key=value`` arguments; ``source`` (the study file) names them in errors.

    Raises:
        ConfigError: one line naming the override: no ``=``, an empty or malformed key, a value
            that is not YAML or breaks a reader limit, the same key twice, too many overrides.
    """
    if len(items) > MAX_OVERRIDES:
        raise ConfigError(f"{source}: {len(items)} overrides, allowed: at most {MAX_OVERRIDES}")
    out: list[Override] = []
    seen: dict[tuple, str] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        shown = f"{_printable(key)}={shown_value(_printable(raw))}" if eq else _printable(item)
        if len(item) > MAX_OVERRIDE_CHARS:
            raise ConfigError(f"{source}: override {shown[:60]}...: {len(item)} characters, "
                              f"allowed: at most {MAX_OVERRIDE_CHARS}")
        if not eq:
            raise ConfigError(f"{source}: override {shown!r}: no '=', {_ALLOWED}")
        path = _key_path(key.strip(), source, shown)
        value = _yaml_value(raw, source, shown)
        if path in seen:
            raise ConfigError(f"{source}: override {shown}: {key.strip()} is also set by {seen[path]}, "
                              f"allowed: each key once")
        seen[path] = shown
        if path in _PATH_KEYS and isinstance(value, str) and value:
            value = os.path.abspath(os.path.expanduser(value))  # typed at a shell: from the current folder
        out.append(Override(path, value, shown, raw))
    return tuple(out)


def shown_overrides(overrides: Sequence[Override]) -> str:
    """The one start-up line: ``overrides: train.epochs=1 data.path=/data/imagenet``."""
    return "overrides: " + " ".join(o.text for o in overrides)


def apply_overrides(data: Any, overrides: Sequence[Override], doc: _Doc, scale: str) -> Any:
    """``data`` (a study file's mapping, or None for an empty file) with ``overrides`` set.

    The file's mapping is copied where it is changed, never mutated. At proxy scale an
    override of a key the ``proxy:`` section also sets drops that proxy key (the module's
    rules). Returns ``data`` unchanged when it is not a mapping (the schema refuses it).
    """
    if not overrides:
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    for o in overrides:
        out = _set(out, o.path, o.value, doc, o)
    if scale == "proxy" and isinstance(out.get("proxy"), Mapping):
        proxy = dict(out["proxy"])
        for o in overrides:
            twin = _proxy_twin(o.path)
            if twin is not None and twin in proxy:
                del proxy[twin]
        out["proxy"] = proxy
    return out


def _proxy_twin(path: tuple[str | int, ...]) -> str | None:
    """The ``proxy:`` key that replaces ``path`` at proxy scale, if any."""
    if path == ("data", "image_size"):
        return "image_size"
    if path == ("repeats",):
        return "repeats"
    if len(path) == 2 and path[0] in ("train", "fixed") and isinstance(path[1], str):
        return path[1]  # train.epochs -> proxy.epochs, train.lr -> proxy.lr, fixed.embed_dim -> proxy.embed_dim
    return None


def _set(node: Any, path: tuple[str | int, ...], value: Any, doc: _Doc, o: Override) -> Any:
    """A copy of ``node`` with ``value`` at ``path`` (sections created on the way)."""
    head, rest = path[0], path[1:]
    if isinstance(node, Mapping):
        key = str(head)
        out = dict(node)
        if not rest:
            out[key] = value
            return out
        child = out.get(key)
        out[key] = _set({} if child is None else child, rest, value, doc, o)
        return out
    if isinstance(node, list) and isinstance(head, int):
        if head >= len(node):
            raise _error(doc, o, f"{_dotted(o.path[:len(o.path) - len(rest) - 1])} has {len(node)} item(s), "
                                 f"allowed: an index below {len(node)}")
        out_list = list(node)
        out_list[head] = value if not rest else _set(out_list[head], rest, value, doc, o)
        return out_list
    where = _dotted(o.path[:len(o.path) - len(path)])
    kind = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(node), type(node).__name__)
    raise _error(doc, o, f"{where} is {kind} ({_printable(repr(node))[:40]}), so it has no key {head!r}, allowed: a key path "
                         f"through mappings (and list indexes)")


def _error(doc: _Doc, o: Override, what: str) -> ConfigError:
    return ConfigError(f"{doc.source}: override {o.text}: {what}")


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path) or "the study"


def _key_path(key: str, source: str, shown: str) -> tuple[str | int, ...]:
    parts = key.split(".")
    if not key or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise ConfigError(f"{source}: override {shown}: key {_printable(key)!r} is not a dotted key of names "
                          f"(letters, digits, '_', '-') and list indexes, {_ALLOWED}")
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"{source}: override {shown}: the key has {len(parts)} parts, allowed: at most {MAX_DEPTH}")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _yaml_value(raw: str, source: str, shown: str) -> Any:
    """``raw`` read as one YAML value by the file's reader, with the file's limits."""
    display = f"{source}: override {shown}"
    text = _decode(raw.encode("utf-8", "surrogateescape"), display)  # not UTF-8, control characters
    loader = _Loader(text, display)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, display)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"{display}: the value is not a YAML value ({problem}), allowed: a number, true/false, "
                          f"null, a string (quote it if it holds ': ' or starts with [ {{ & * ! | > ' \" % @ `), "
                          f"a flow list [a, b] or mapping {{k: v}}") from None
    finally:
        loader.dispose()


def _printable(text: str) -> str:
    """``text`` safe to print in one line (escapes for line breaks and control characters)."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")
