"""Read one YAML file that a user hands ablate (a study, a ``space:`` file, a detection data
YAML) into plain data plus a map from key path to line, refusing hostile input in one line.

Every such file is untrusted: it may be huge, an alias bomb ("billion laughs", also through
``<<:`` merge keys), nested 100 000 levels deep, recursive through an alias, UTF-16 or
Latin-1, or full of control characters. Each of these is refused with a
:class:`~ablate.errors.ConfigError` that names the file (and the line and key path where there
is one) and the limit, in well under a second and a few MB of memory, before anything walks
the expanded data.

The order of the guards is what bounds the cost:

1. size: at most :data:`MAX_BYTES`, read as at most ``MAX_BYTES + 1`` bytes (``/dev/zero``
   and pipes included), checked before parsing;
2. encoding: UTF-8 only (a byte-order mark is fine); NUL bytes, UTF-16/32 byte-order marks,
   invalid UTF-8 and control characters are refused with their line;
3. while composing (libyaml's parser where present, else PyYAML's): at most
   :data:`MAX_NODES` nodes and :data:`MAX_DEPTH` levels, so composing stops early;
4. on the composed node graph, memoised per node: no alias that contains itself, and at most
   :data:`MAX_NODES` nodes and :data:`MAX_DEPTH` levels *after* expanding aliases, so no later
   walk (line index, checks, JSON) can blow up;
5. duplicate keys, then construction (numbers of at most :data:`MAX_NUMBER_CHARS`
   characters; a bad date is an error with its line, not a traceback).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import ConfigError

__all__ = ["read_yaml", "MAX_BYTES", "MAX_NODES", "MAX_DEPTH", "MAX_NUMBER_CHARS"]

#: Largest file read, in bytes. A study file is a few KB; an ultralytics data YAML with a
#: thousand class names is ~30 KB.
MAX_BYTES = 2 * 1024 * 1024
#: Most nodes (keys, values, list items), counted once as written and once with every alias expanded.
MAX_NODES = 100_000
#: Deepest nesting, as written and with aliases expanded (a study file is about 6 deep).
MAX_DEPTH = 100
#: Longest number (Python's int() is quadratic in the digits, and so is a base-60 ``1:2:3``).
MAX_NUMBER_CHARS = 100

_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
#: What YAML (and PyYAML's reader) refuses: C0 controls but tab/LF/CR, DEL, C1 but NEL, U+FFFE/FFFF.
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
         (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"))
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
#: A libyaml parse error is re-read by PyYAML's parser (for its wording) only this far into the text.
_REPARSE_CHARS = 32 * 1024


class _Guards:
    """Counts nodes and depth while the composer builds them (both composers call
    ``descend_resolver``/``ascend_resolver`` around every node but aliases), and turns a value
    the constructor cannot build into an error with its line."""

    def __init__(self, stream: str, display: str = "<yaml>") -> None:
        super().__init__(stream)  # type: ignore[call-arg]
        self._display = display
        self._nodes = 0
        self._stack: list[tuple[Any, Any]] = []

    def descend_resolver(self, current_node: Any, current_index: Any) -> Any:
        self._nodes += 1
        self._stack.append((current_node, current_index))
        if self._nodes > MAX_NODES:
            raise self._limit(f"more than {MAX_NODES} values (keys, values and list items), "
                              f"allowed: at most {MAX_NODES}")
        if len(self._stack) > MAX_DEPTH:
            raise self._limit(f"nested deeper than {MAX_DEPTH} levels, allowed: at most {MAX_DEPTH}")
        return super().descend_resolver(current_node, current_index)  # type: ignore[misc]

    def ascend_resolver(self) -> Any:
        self._stack.pop()
        return super().ascend_resolver()  # type: ignore[misc]

    def _limit(self, what: str) -> ConfigError:
        """The error for the node being composed: its parent's key (or the parent) gives the line."""
        path: list[str | int] = []
        line = None
        for parent, index in self._stack[1:]:
            if isinstance(index, yaml.Node):
                path.append(_key(index))
                line = index.start_mark.line + 1
            elif isinstance(index, int):
                path.append(index)
                line = parent.start_mark.line + 1
            elif parent is not None:
                line = parent.start_mark.line + 1
        return _error(self._display, line, tuple(path), what)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node.tag in _NUMBER_TAGS and isinstance(node.value, str) and len(node.value) > MAX_NUMBER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number of {len(node.value)} characters, allowed: at most {MAX_NUMBER_CHARS} "
                            f"(quote it to make it a string)", node.start_mark)
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, TypeError, OverflowError) as err:
            kind = node.tag.rsplit(":", 1)[-1]
            shown = node.value if isinstance(node.value, str) else node.id
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_short(shown)!r} as {kind}: {err}", node.start_mark) from None


class _PyLoader(_Guards, yaml.SafeLoader):
    """PyYAML's pure-Python safe loader with the guards; also reads ``1e-4`` as a float."""


_PyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))

if getattr(yaml, "CSafeLoader", None) is not None:
    class _CLoader(_Guards, yaml.CSafeLoader):  # type: ignore[misc,name-defined]
        """libyaml's parser and composer (nodes keep their marks), PyYAML's safe constructor
        and resolver (so the ``1e-4`` float rule is the same), with the guards."""

    _CLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    _Loader: type = _CLoader
else:  # pragma: no cover - PyYAML built without libyaml
    _Loader = _PyLoader


def read_yaml(path: Path | str, display: str) -> tuple[Any, dict[tuple, int]]:
    """Plain data plus a map from key path to 1-based line (the key's line for mapping entries).

    Args:
        path: The file.
        display: How messages name the file (as the user wrote it).

    Raises:
        ConfigError: One line: the file is missing, a folder, unreadable, too large, not UTF-8
            text, not valid YAML, beyond a limit above, or has a duplicate key.
    """
    text = _decode(_read_bytes(Path(path), display), display)
    loader = _Loader(text, display)
    lines: dict[tuple, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _measure(node, display)
        _index_lines(node, (), lines, display)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as err:
        raise _syntax_error(err, text, display) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{display}: invalid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise ConfigError(f"{display}: nested too deeply, allowed: at most {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _read_bytes(path: Path, display: str) -> bytes:
    """At most ``MAX_BYTES + 1`` bytes: a regular file's size is checked first, and a pipe or
    device (which has no size) is cut off there too."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(MAX_BYTES + 1) if size <= MAX_BYTES else b""
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found, allowed: an existing YAML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{display}: is a folder, allowed: a YAML file") from None
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"{display}: cannot read: {reason}") from None
    if size > MAX_BYTES or len(data) > MAX_BYTES:
        has = f"{size} bytes" if size > MAX_BYTES else f"more than {MAX_BYTES} bytes"
        raise ConfigError(f"{display}: the file has {has}, allowed: a YAML file of at most {MAX_BYTES} bytes "
                          f"({MAX_BYTES // 1024 // 1024} MiB)")
    return data


def _decode(data: bytes, display: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped) with no character YAML refuses."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise ConfigError(f"{display}: the file is {name} (it starts with a {name} byte-order mark), "
                              f"allowed: UTF-8 text (convert it, e.g. iconv -f {name} -t UTF-8)")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ConfigError(f"{display}:{line}: the file holds a NUL byte (is it UTF-16 or binary?), "
                          f"allowed: UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{display}:{line}: byte 0x{data[err.start]:02x} is not UTF-8 (Latin-1 or another "
                          f"legacy encoding?), allowed: UTF-8 text") from None
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - text.rfind("\n", 0, bad.start())
        raise ConfigError(f"{display}:{line}: control character U+{ord(bad.group()):04X} in column {column}, "
                          f"allowed: printable text, tabs and line breaks (inside double quotes write it as "
                          f"an escape, e.g. \"\\x{ord(bad.group()) & 0xFF:02x}\")")
    return text


def _measure(root: yaml.Node, display: str) -> None:
    """Refuse a node graph whose aliases recurse, or expand beyond ``MAX_NODES`` or ``MAX_DEPTH``.

    Sizes and depths are memoised per collection node, so a bomb is measured in time linear in
    what was written, without recursion. A merge key counts like any other key (merging only
    ever keeps fewer pairs), so ``<<:`` bombs are measured too.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()  # collections whose children are being measured: the ancestors of the top
    via: dict[int, tuple[yaml.Node, str | int | None]] = {}  # first parent, and the key under it
    stack: list[tuple[yaml.Node, Any]] = [(root, None)]

    def fail(node: yaml.Node, what: str) -> ConfigError:
        path: list[str | int] = []
        at = node
        seen: set[int] = set()
        while id(at) in via and id(at) not in seen:  # a root that is its own child (`&a [*a]`) ends the walk
            seen.add(id(at))
            at, part = via[id(at)]
            if part is not None:
                path.append(part)
        return _error(display, node.start_mark.line + 1, tuple(reversed(path)), what)

    while stack:
        node, pending = stack.pop()
        key = id(node)
        if pending is not None:  # every child measured: this node's turn
            open_.discard(key)
            scalars, collections = pending
            size[key] = 1 + scalars + sum(size[id(kid)] for kid in collections)
            depth[key] = 1 + max([depth[id(kid)] for kid in collections] + [1 if scalars else 0])
            if size[key] > MAX_NODES:
                raise fail(node, f"expands to more than {MAX_NODES} values through aliases (an alias bomb?), "
                                 f"allowed: at most {MAX_NODES} with every alias expanded")
            if depth[key] > MAX_DEPTH:
                raise fail(node, f"nested deeper than {MAX_DEPTH} levels with aliases expanded, "
                                 f"allowed: at most {MAX_DEPTH}")
            continue
        if key in size or isinstance(node, yaml.ScalarNode):
            continue
        if key in open_:
            raise fail(node, "an alias refers to a node that contains it (a recursive alias), "
                             "allowed: aliases to earlier, complete nodes")
        open_.add(key)
        kids: list[tuple[yaml.Node, str | int | None]] = []
        scalars = 0
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                if isinstance(item, yaml.ScalarNode):
                    scalars += 1
                else:
                    kids.append((item, i))
        else:
            for k, v in node.value:
                for kid, part in ((k, None), (v, k)):
                    if isinstance(kid, yaml.ScalarNode):
                        scalars += 1
                    else:
                        kids.append((kid, None if part is None else _key(part)))
        stack.append((node, (scalars, [kid for kid, _ in kids])))
        for kid, part in reversed(kids):
            if id(kid) not in size:
                via.setdefault(id(kid), (node, part))
                stack.append((kid, None))


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], display: str, depth: int = 0) -> None:
    """Record the line of every key path and refuse duplicate keys.

    Called only after :func:`_measure`, so the walk (which follows aliases, so an error inside
    an alias points at the anchor's lines, as it always did) stays within ``MAX_NODES`` and
    ``MAX_DEPTH``.
    """
    lines.setdefault(path, node.start_mark.line + 1)
    if depth > MAX_DEPTH:  # pragma: no cover - _measure refused it
        raise _error(display, node.start_mark.line + 1, path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _key(key_node)
            child = path + (key,)
            if key in seen:
                raise _error(display, key_node.start_mark.line + 1, child, "duplicate key, allowed: each key once")
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            if not isinstance(value_node, yaml.ScalarNode):
                _index_lines(value_node, child, lines, display, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            if not isinstance(item, yaml.ScalarNode):
                _index_lines(item, path + (i,), lines, display, depth + 1)


def _key(node: yaml.Node) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else repr(node)


def _syntax_error(err: yaml.MarkedYAMLError, text: str, display: str) -> ConfigError:
    """One line for a parse error. libyaml's wording is terser than PyYAML's (which names the
    character, e.g. ``'\\t'``), so a libyaml scanner or parser error is re-parsed up to its
    line by PyYAML's (event-only, iterative) parser for the message users know."""
    if "maximum nesting depth" in str(err.problem):  # libyaml's own limit (1000)
        mark = err.problem_mark
        return _error(display, mark.line + 1 if mark else None, (),
                      f"nested deeper than {MAX_DEPTH} levels, allowed: at most {MAX_DEPTH}")
    if _Loader is not _PyLoader and isinstance(err, (yaml.scanner.ScannerError, yaml.parser.ParserError)):
        err = _python_parse_error(text, err)
    mark = err.problem_mark or err.context_mark
    where = f"{display}:{mark.line + 1}" if mark is not None else display
    problem = " ".join(str(err.problem or err.context or "syntax error").split())
    if problem == "found undefined alias" and mark is not None:  # libyaml's words lack the name
        alias = re.match(r"\*([^\s,\[\]{}]+)", _line(text, mark.line)[mark.column:])
        problem += f" {alias.group(1)!r}" if alias else ""
    if err.problem and str(err.context or "").startswith("expected"):  # "expected a single document ..."
        problem = " ".join(f"{err.context}, {err.problem}".split())
    if mark is not None and "\t" in _indent(text, mark.line):
        problem += ", allowed: spaces for indentation, not tabs"
    return ConfigError(f"{where}: invalid YAML: {problem}")


def _python_parse_error(text: str, err: yaml.MarkedYAMLError) -> yaml.MarkedYAMLError:
    """PyYAML's error for what libyaml refused, if the text up to that line is short enough
    (:data:`_REPARSE_CHARS`) for the slow parser; else libyaml's own."""
    mark = err.problem_mark or err.context_mark
    if mark is None:
        return err
    if len(text) > _REPARSE_CHARS and mark.line >= text.count("\n", 0, _REPARSE_CHARS):
        return err  # the error's line ends past _REPARSE_CHARS
    last = mark.line + 1
    parser = yaml.SafeLoader(text)
    try:
        while parser.check_event():
            event = parser.get_event()
            if event.start_mark.line > last:
                break
    except yaml.MarkedYAMLError as python_err:
        return python_err
    except yaml.YAMLError:
        pass
    finally:
        parser.dispose()
    return err


def _line(text: str, line: int) -> str:
    """The 0-based ``line`` of ``text`` (only called for an error, on at most MAX_BYTES)."""
    start = 0
    for _ in range(line):
        start = text.find("\n", start) + 1
        if start == 0:
            return ""
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def _indent(text: str, line: int) -> str:
    body = _line(text, line)
    return body[:len(body) - len(body.lstrip(" \t"))]


def _error(display: str, line: int | None, path: tuple, what: str) -> ConfigError:
    where = f"{display}:{line}" if line is not None else display
    key = _dotted(path)
    return ConfigError(f"{where}: {key}: {what}" if key else f"{where}: {what}")


def _dotted(path: tuple) -> str:
    """``objectives[1].name``; a key with a control character or line break is shown escaped."""
    if len(path) > 8:  # a path 100 levels deep: its start and its end
        tail = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[-2:])
        return f"{_dotted(path[:4])}...{tail.lstrip('.')}"
    out = ""
    for part in path:
        part = part if isinstance(part, int) else _short(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out if out.isprintable() else out.encode("unicode_escape").decode("ascii")


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."
