"""Study files → a validated :class:`~ablate.study.schema.Study` (the one validation
boundary), and back to a JSON-able spec.

``load_study("studies/x.yaml")`` reads YAML, checks every key and value once, and returns a
:class:`Study`; past this module only typed objects travel (STYLE §7). Every mistake is
one :class:`~ablate.errors.ConfigError` whose message is a single line::

    studies/x.yaml:7: fixed.attention: unknown attention 'focl', allowed: focal, softmax; did you mean 'focal'?

Paths: ``space:``, ``data.path`` and ``weights:`` are relative to the study file (to ``base_dir`` for a
dict); a relative SQLite storage URL (``sqlite:///runs/x.db``) is made absolute against
the *current working directory* at load time, because Ray changes each worker's working
directory and every process must open the same file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


from ablate.errors import ConfigError
from ablate.study.space import (
    grid_cells,
    thaw,
)
from ablate.study.schema import MAX_CONCURRENT, MAX_CPUS, MAX_GPUS, MAX_IMAGE_SIZE, MAX_TRIALS, Resources, SCALES, Study, TRAIN_KEYS, _NAME_RE, _TASKS
from ablate.study.declaration import _DATA_KEYS, _RESOURCE_KEYS, _STUDY_KEYS, _STUDY_REQUIRED, _TRAIN_SECTION_KEYS
from ablate.study.doc import _Doc, _check_not_reserved, _check_train_value, _float, _int, _json, _mapping, _one_of, _read_yaml, _str
from ablate.study.overrides import OverrideDoc, apply_overrides, parse_overrides
from ablate.study.reference import study_reference
from ablate.study.space_file import space_to_dict
from ablate.study.sections import _Redirect, _storage, _study_baseline, _study_data, _study_grid, _study_objectives, _study_proxy, _study_sampler, _study_scheduler, _study_space, _study_train, _study_trackers
from ablate.study.feasibility import _check_against_models
from ablate.study.weights import study_weights

__all__ = ["check_study", "load_study", "study_from_dict", "study_to_dict", "validate_study"]










def load_study(path: str | os.PathLike[str], *, check: bool = True, scale: str = "proxy",
               overrides: Sequence[str] = ()) -> Study:
    """Read and validate a study YAML file.

    Args:
        path: The study file; ``space:`` and ``data.path`` are relative to its folder.
        check: Also check every fixed/grid key against the model builder and every grid
            cell for feasibility (imports torch). Turn off only for quick schema checks.
        scale: ``proxy`` applies the file's ``proxy:`` overrides to what trials train;
            ``paper`` trains the unscaled models.
        overrides: ``key=value`` strings (``train.epochs=1``) set in the file's mapping before
            it is validated, so they are checked exactly like the file
            (:mod:`ablate.study.overrides`).

    Raises:
        ConfigError: one line ``file:line: key.path: what is wrong, allowed: ...``
            (``file: override key=value: key.path: ...`` for a key an override set).
    """
    return _load(path, check=check, scale=scale, overrides=overrides)[0]


def check_study(path: str | os.PathLike[str], *, scale: str = "proxy", storage: str | None = None,
                overrides: Sequence[str] = ()) -> Study:
    """Every check ``ablate run`` makes before it starts, without writing anything: the one
    verdict of ``ablate validate`` and ``ablate run`` (``--dry-run`` or not) at ``scale``.

    That is :func:`load_study` with ``check=True`` (the schema, the search space, every
    fixed/grid/proxy key against the model builder, every grid cell and its paper-scale
    model for feasibility, the data path) at ``scale`` with ``overrides`` applied, then the storage the run would open
    (``storage``, the ``--storage`` override, else the study's):

    - the URL parses and names an installed SQLAlchemy dialect (``sqlite://host/x.db``,
      a host in a SQLite URL, is refused as SQLAlchemy would refuse it);
    - for SQLite, the file is a SQLite database (or empty) that can be written, or, when
      missing, its nearest existing folder can hold it (nothing is created here).

    With ``train.compile: true`` the host's C++ compiler that torch.compile needs on the CPU
    is looked up (:func:`ablate.train.toolchain.missing_compiler`); a trial checks again for
    its own device.

    Left to the run, because they are a database's or a machine's state rather than the
    file's: whether a database already holds this study with another spec (the run checks
    that when it opens the study; validate never opens a database), whether a server is
    reachable with these credentials and its driver (psycopg, ...) is installed, and the
    Ray address and devices.

    Raises:
        ConfigError: one line ``file:line: key.path: what is wrong, allowed: ...``
            (``file: --storage: ...`` for the override).
    """
    study, doc = _load(path, check=True, scale=scale, overrides=overrides)
    if study.train.compile:
        from ablate.train.toolchain import compile_refusal

        refusal = compile_refusal("cpu")
        if refusal is not None:
            raise doc.error(("train", "compile"), refusal)
    if storage is None:
        _check_storage(study.storage, lambda what: doc.error(("storage",), what))
    else:
        _check_storage(storage, lambda what: ConfigError(f"{doc.source}: --storage: {what}"))
    return study


def _load(path: str | os.PathLike[str], *, check: bool, scale: str,
          overrides: Sequence[str] = ()) -> tuple[Study, _Doc]:
    display = os.fspath(path)
    data, lines = _read_yaml(Path(path), display)
    parsed = parse_overrides(overrides, display)
    doc: _Doc = OverrideDoc(display, lines, Path(path).resolve().parent, overrides=parsed)
    data = apply_overrides(data, parsed, doc, _scale_arg(scale))
    if isinstance(data, Mapping) and "scale" in data:
        raise doc.error(("scale",), "is chosen when running (ablate run --scale proxy|paper), "
                                    "allowed: drop it from the study file")
    study, space_doc = _parse_study(doc, data, source=display, scale=_scale_arg(scale))
    if check:
        _check_against_models(study, doc, space_doc)
    return study, doc


_STORAGE_ALLOWED = "allowed: an SQLAlchemy URL, e.g. sqlite:///runs/x.db, postgresql://host/db"
_SQLITE_ALLOWED = "allowed: a SQLite database file, or a path in a writable folder where one can be created"


def _check_storage(url: str, error: Callable[[str], ConfigError]) -> None:
    """What opening ``url`` for a run would refuse, found without connecting or writing:
    first every ``${NAME}`` it takes from the environment must be set (named if not), then
    the expanded URL is checked. Messages show the URL as :func:`~ablate.storage.display_url`
    does (references kept, a literal password ``***``) and are scrubbed of its secrets."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ablate.errors import StorageError
    from ablate.storage import display_url, expand_url, scrub_secrets, sqlite_path

    shown = display_url(url)
    try:
        real = expand_url(url)
    except StorageError as err:
        raise error(str(err)) from None
    try:
        parsed = make_url(real)
        parsed.get_dialect()  # loads the dialect; its driver is imported when the run connects
    except (ArgumentError, ValueError) as err:  # also NoSuchModuleError; ValueError: e.g. a port that is no number
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise error(f"cannot be opened: {shown!r}: {scrub_secrets(first, url)}, {_STORAGE_ALLOWED}") from None
    if parsed.get_backend_name() == "sqlite" and (parsed.host or parsed.port):
        raise error(f"a SQLite URL has no host, got {shown!r}, "
                    f"allowed: sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise error(f"an in-memory SQLite database keeps nothing after the run and no other process can "
                    f"read it, got {shown!r}, allowed: sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise error(f"port {parsed.port} is not a TCP port, got {shown!r}, allowed: 1 to 65535")
    path = sqlite_path(real)
    if path is None:
        return
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise error(f"{str(path)!r} is a folder, {_SQLITE_ALLOWED}")
    if path.exists():
        try:
            with path.open("rb") as f:
                head = f.read(16)
        except OSError as err:
            raise error(f"{str(path)!r} cannot be read ({err.strerror}), {_SQLITE_ALLOWED}") from None
        if head and head != b"SQLite format 3\x00":
            raise error(f"{str(path)!r} is not a SQLite database, {_SQLITE_ALLOWED}")
        if not os.access(path, os.W_OK):
            raise error(f"{str(path)!r} is read-only and a run writes to it, {_SQLITE_ALLOWED}")
        if not os.access(path.parent, os.W_OK | os.X_OK):  # SQLite writes its journal/WAL beside it
            raise error(f"{str(path)!r} is in a read-only folder and SQLite writes its journal beside it, "
                        f"{_SQLITE_ALLOWED}")
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise error(f"{str(path)!r} cannot be created: {str(folder)!r} is a file, {_SQLITE_ALLOWED}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{str(path)!r} cannot be created: {str(folder)!r} is not writable, {_SQLITE_ALLOWED}")


def _scale_arg(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"--scale: must be one of {', '.join(map(repr, SCALES))}, got {scale!r}")
    return scale


def study_from_dict(d: Mapping[str, Any], source: str = "<spec>", *, base_dir: str | os.PathLike[str] | None = None,
                    check: bool = True) -> Study:
    """Validate a study given as a dict (a JSON spec from Ray or the database).

    Same rules as :func:`load_study`; errors name ``source`` instead of a file and carry
    no line. Relative paths resolve against ``base_dir`` (default: the working directory).
    The scale is the dict's ``scale`` (default ``proxy``); ``data`` and ``train`` are taken
    as written, and at proxy scale the ``proxy`` overrides are applied to them again (they
    set absolute values, so a spec written by :func:`study_to_dict` reads back equal).
    """
    doc = _Doc(source, {}, Path(base_dir) if base_dir is not None else Path.cwd())
    raw_scale = d.get("scale", "proxy") if isinstance(d, Mapping) else "proxy"
    _one_of(doc, ("scale",), raw_scale, SCALES)
    body = {k: v for k, v in d.items() if k != "scale"} if isinstance(d, Mapping) else d
    study, space_doc = _parse_study(doc, body, source=None if source == "<spec>" else source, scale=raw_scale)
    if check:
        _check_against_models(study, doc, space_doc)
    return study


def study_to_dict(study: Study) -> dict[str, Any]:
    """A JSON-able dict with every setting resolved (space inlined, paths absolute).

    ``study_from_dict(study_to_dict(s)) == s``; the runner stores it in the database as
    ``study.user_attrs["spec"]`` so dashboards need nothing else.
    """
    return {
        "name": study.name,
        "description": study.description,
        "task": study.task,
        "space": space_to_dict(study.space),
        "fixed": thaw(study.fixed),
        "grid": [thaw(dict(r)) for r in study.grid_rows] if study.grid_rows is not None else thaw(study.grid),
        "objectives": [dataclasses.asdict(o) for o in study.objectives],
        "data": dataclasses.asdict(study.data),
        "train": dataclasses.asdict(study.train),
        "sampler": dataclasses.asdict(study.sampler),
        "scheduler": dataclasses.asdict(study.scheduler) if study.scheduler else None,
        "trials": study.trials,
        "max_concurrent": study.max_concurrent,
        "resources": dataclasses.asdict(study.resources),
        "storage": study.storage,
        "seed": study.seed,
        "paper_resolution": study.paper_resolution,
        "reference": thaw(study.reference) if study.reference is not None else None,
        "repeats": study.repeats,
        "baseline": thaw(dict(study.baseline)) if study.baseline is not None else None,
        "base": study.base,
        "proxy": study.proxy.to_dict() if study.proxy is not None else None,
        "scale": study.scale,
        # Only when set: a study without weights keeps the spec it always had (older databases compare equal).
        **({"weights": study.weights.to_dict()} if study.weights is not None else {}),
    }


def validate_study(study: Study) -> None:
    """Check a study's fixed/grid keys and every grid cell against the model builder.

    :func:`load_study` already does this with line numbers; use this for a study built
    in code. Errors name ``study.source`` (or ``<spec>``) and the key path.

    Raises:
        ConfigError: unknown key or bad value, or an infeasible grid cell.
    """
    doc = _Doc(study.source or "<spec>", {}, Path.cwd())
    _check_against_models(study, doc, doc.at("space"))


def _section(m: Mapping[str, Any], key: str) -> Any:
    """A mapping section's value, ``{}`` when left out or null; anything else (``data: 0``,
    ``fixed: []``) is passed on to be refused as what it is, not read as absent."""
    value = m.get(key)
    return {} if value is None else value


def _parse_study(doc: _Doc, data: Any, source: str | None, scale: str = "proxy") -> tuple[Study, _Doc]:
    if data is None:
        raise doc.error((), "is empty, allowed: a study mapping with at least name, objectives and a grid or trials")
    m = _mapping(doc, (), data, _STUDY_KEYS, required=_STUDY_REQUIRED)

    name = _str(doc, ("name",), m["name"])
    if not _NAME_RE.fullmatch(name):
        raise doc.error(("name",), f"names files and folders, so it must use only letters, digits, '_', '.', '-', "
                                   f"start with a letter or digit and have at most 100 characters, got {name!r}")
    description = _str(doc, ("description",), m.get("description") or "")
    task = _one_of(doc, ("task",), m.get("task", "classify"), _TASKS)
    seed = _int(doc, ("seed",), m.get("seed", 0), 0, 2**32 - 1)

    space, space_doc = _study_space(doc, m.get("space"))
    base = m.get("base")
    if base is not None:
        base = _str(doc, ("base",), base)

    fixed = _mapping(doc, ("fixed",), _section(m, "fixed"))
    _json(doc, ("fixed",), fixed)
    for key, value in fixed.items():
        _check_not_reserved(doc, ("fixed", key), key)
        if key in TRAIN_KEYS:
            fixed[key] = _check_train_value(doc, ("fixed", key), key, value)

    grid, grid_rows = _study_grid(doc, m.get("grid") or {}, fixed, space)

    paper_resolution = m.get("paper_resolution")
    if paper_resolution is not None:
        paper_resolution = _int(doc, ("paper_resolution",), paper_resolution, 1, MAX_IMAGE_SIZE)
    proxy = _study_proxy(doc, m.get("proxy"), grid, grid_rows) if m.get("proxy") is not None else None

    objectives = _study_objectives(doc, m.get("objectives"), task, paper_resolution)
    raw_data = _mapping(doc, ("data",), _section(m, "data"), _DATA_KEYS)
    raw_train = _mapping(doc, ("train",), _section(m, "train"), _TRAIN_SECTION_KEYS)
    if base is not None and paper_resolution is not None and "image_size" not in raw_data:
        raw_data["image_size"] = paper_resolution  # the base's own resolution, unless scaled down
    if scale == "proxy" and proxy is not None:
        # Applied before the sections are checked, so the combined values obey the same rules
        # (warmup_epochs <= epochs, ...); an error then names the proxy key that set the value.
        data_doc, train_doc = doc, doc
        if proxy.image_size is not None:
            raw_data["image_size"] = proxy.image_size
            data_doc = _Redirect(doc, {("data", "image_size"): ("proxy", "image_size")})
        moved = {**thaw(proxy.train), **({"epochs": proxy.epochs} if proxy.epochs is not None else {})}
        raw_train.update(moved)
        train_doc = _Redirect(doc, {("train", k): ("proxy", k) for k in moved})
        data_spec = _study_data(data_doc, raw_data, task)  # type: ignore[arg-type]
        train = _study_train(train_doc, raw_train, seed)  # type: ignore[arg-type]
    else:
        data_spec = _study_data(doc, raw_data, task)
        train = _study_train(doc, raw_train, seed)

    if task == "detect" and train.recipe not in (None, "proxy"):
        raise doc.error(("train", "recipe"), f"{train.recipe!r} is a classification recipe; detection trains with "
                                             "ultralytics' own augmentation, allowed: drop recipe")
    sampler = _study_sampler(doc, _section(m, "sampler"), grid, seed)
    scheduler = _study_scheduler(doc, m.get("scheduler"), train, objectives)

    n_cells = len(grid_rows) if grid_rows is not None else len(grid_cells(grid)) if grid else 0
    if grid:
        trials = _int(doc, ("trials",), m["trials"], 1, n_cells) if m.get("trials") is not None else n_cells
    else:
        if m.get("trials") is None:
            raise doc.error(("trials",), "required key is missing (a study without a grid needs a budget), "
                                         "allowed: an integer >= 1")
        trials = _int(doc, ("trials",), m["trials"], 1, MAX_TRIALS)
        taken = set(fixed)
        if not any(p.name not in taken for p in space.params):
            where = ("space",) if "space" in m else ()
            raise doc.error(where, "nothing to search: every param is fixed or there is no space, "
                                   "allowed: a space with params that fixed does not set, or a grid")

    max_concurrent = m.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _int(doc, ("max_concurrent",), max_concurrent, 1, MAX_CONCURRENT)

    res = _mapping(doc, ("resources",), _section(m, "resources"), _RESOURCE_KEYS)
    resources = Resources(cpu=_float(doc, ("resources", "cpu"), res.get("cpu", 1), 0, MAX_CPUS, open_low=True),
                          gpu=_float(doc, ("resources", "gpu"), res.get("gpu", 0), 0, MAX_GPUS))

    storage = _storage(doc, m.get("storage", f"sqlite:///runs/{name}.db"))


    repeats = _int(doc, ("repeats",), m.get("repeats", 1), 1, 1000)
    if scale == "proxy" and proxy is not None and proxy.repeats is not None:
        repeats = proxy.repeats
    cells = ([dict(r) for r in grid_rows] if grid_rows is not None else grid_cells(thaw(grid))) if grid else []
    reference = m.get("reference")
    if reference is not None:
        reference = study_reference(doc, reference, cells)
    baseline = _study_baseline(doc, m.get("baseline"), cells)

    study = Study(name=name, description=description, task=task, space=space, fixed=fixed, grid=grid,
                  objectives=objectives, data=data_spec, train=train, sampler=sampler, scheduler=scheduler,
                  trials=trials, max_concurrent=max_concurrent, resources=resources, storage=storage, seed=seed,
                  paper_resolution=paper_resolution, reference=reference, base=base, proxy=proxy,
                  scale=scale, grid_rows=grid_rows, repeats=repeats, baseline=baseline,
                  source=source, trackers=_study_trackers(doc, m.get("trackers")),
                  weights=study_weights(doc, m.get("weights"), task))  # type: ignore[arg-type]
    return study, space_doc

