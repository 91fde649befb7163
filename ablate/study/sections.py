"""The sections of a study file, each checked on its own: proxy, space, grid (mapping or
rows), objectives, data, train, baseline, sampler, scheduler, storage and trackers."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any


from ablate.errors import AblateError, ConfigError
from ablate.study.space import (
    SearchSpace,
    freeze,
    in_domain,
    same_value,
    thaw,
)
from ablate.study.schema import MAX_BATCH, MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_REDUCTION, MAX_WORKERS, DataSpec, LABEL, OBJECTIVES, Objective, ProxySpec, SamplerSpec, SchedulerSpec, TRAINING_METRICS, TRAIN_KEYS, TrainSpec, _DATASETS, _FOLDER_DATASETS, _SAMPLERS, _SCHEDULERS, _TASK_DATASETS, _TASK_IMAGE_SIZE, _TASK_METRIC, _URL_RE
from ablate.study.declaration import _DATA_KEYS, _OBJECTIVE_KEYS, _OBJECTIVE_REQUIRED, _PROXY_SPECIAL, _SAMPLER_KEYS, _SCHEDULER_KEYS, _TRAIN_DEFAULTS, _TRAIN_SECTION_KEYS
from ablate.study.doc import _Doc, _bool, _check_not_reserved, _check_train_value, _float, _int, _json, _mapping, _one_of, _read_yaml, _show, _str
from ablate.study.space_file import _describe_domain, _parse_space
from ablate.study.trackers import _ALLOWED_MLFLOW, TRACKER_KEYS, TrackersSpec, mlflow_uri, tracker_dir


class _Redirect:
    """A :class:`_Doc` whose errors for some key paths point at another key (``train.epochs``
    set by ``proxy.epochs`` is reported as ``proxy.epochs``, on that key's line)."""

    def __init__(self, doc: _Doc, moves: Mapping[tuple, tuple]) -> None:
        self.doc, self.moves = doc, dict(moves)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.doc, name)

    def error(self, path: Sequence[str | int], what: str) -> ConfigError:
        path = tuple(path)
        for old, new in self.moves.items():
            if path[:len(old)] == old:
                return self.doc.error(new + path[len(old):], what)
        return self.doc.error(path, what)


def _study_proxy(doc: _Doc, raw: Any, grid: Mapping[str, tuple],
                 grid_rows: tuple[dict[str, Any], ...] | None) -> ProxySpec:
    m = _mapping(doc, ("proxy",), raw, what="a mapping of overrides (arch keys, image_size, epochs, "
                                            "training keys, grid)")
    _json(doc, ("proxy",), m)
    arch: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, value in m.items():
        path = ("proxy", key)
        if key in _PROXY_SPECIAL:
            continue
        if key in _TRAIN_SECTION_KEYS and key not in TRAIN_KEYS:
            raise doc.error(path, f"{key!r} is the same at both scales, allowed: image_size, epochs, grid, "
                                  f"{', '.join(sorted(TRAIN_KEYS))} or an arch key")
        _check_not_reserved(doc, path, key)
        if key in grid:
            raise doc.error(path, f"{key!r} is a grid key, allowed: map its values with proxy.grid")
        if key in TRAIN_KEYS:
            train[key] = _check_train_value(doc, path, key, value)
        else:
            arch[key] = value
    image_size = _int(doc, ("proxy", "image_size"), m["image_size"], 4, MAX_IMAGE_SIZE) if "image_size" in m else None
    epochs = _int(doc, ("proxy", "epochs"), m["epochs"], 1, MAX_EPOCHS) if "epochs" in m else None
    proxy_grid: dict[str, tuple] | tuple[dict[str, Any], ...] = {}
    raw_grid = m.get("grid")
    if raw_grid is not None:
        path = ("proxy", "grid")
        if not grid:
            raise doc.error(path, "the study has no grid, allowed: drop proxy.grid")
        if grid_rows is not None:
            n = len(grid_rows)
            if not isinstance(raw_grid, list) or len(raw_grid) != n:
                raise doc.error(path, f"must be a list of {n} mappings, one per grid row (arch keys that row "
                                      f"trains with at proxy scale; {{}} for none), got {_show(raw_grid)}")
            rows = []
            for i, item in enumerate(raw_grid):
                row = _mapping(doc, path + (i,), item, what="a mapping of arch keys")
                for key in row:
                    _check_not_reserved(doc, path + (i, key), key)
                    if key == LABEL or key in TRAIN_KEYS:
                        raise doc.error(path + (i, key), f"{key!r} is not an arch key, allowed: arch keys")
                rows.append(row)
            proxy_grid = tuple(rows)
        else:
            g = _mapping(doc, path, raw_grid, allowed=list(grid), what="a mapping of grid key to its proxy values")
            out: dict[str, tuple] = {}
            for key, values in g.items():
                n = len(grid[key])
                if not isinstance(values, list) or len(values) != n:
                    raise doc.error(path + (key,), f"must be a list of {n} values, one per value of grid.{key} "
                                                   f"{thaw(list(grid[key]))!r}, got {_show(values)}")
                out[key] = tuple(freeze(v) for v in values)
            proxy_grid = out
    repeats = _int(doc, ("proxy", "repeats"), m["repeats"], 1, 1000) if "repeats" in m else None
    return ProxySpec(arch=arch, grid=proxy_grid, image_size=image_size, epochs=epochs, train=train, repeats=repeats)


def _study_space(doc: _Doc, raw: Any) -> tuple[SearchSpace, _Doc]:
    if raw is None:
        return SearchSpace(), doc.at("space")
    if isinstance(raw, str):
        display = os.path.normpath(os.path.join(os.path.dirname(doc.source), raw)) \
            if not os.path.isabs(raw) and not doc.source.startswith("<") else raw
        path = doc.base_dir / raw
        if not path.is_file():
            raise doc.error(("space",), f"file not found: {raw!r} (looked at {path.resolve()}), "
                                        f"allowed: a search-space YAML path relative to this file, or a mapping")
        data, lines = _read_yaml(path, display)
        space_doc = _Doc(display, lines, path.resolve().parent)
        return _parse_space(space_doc, data, source=display), space_doc
    if isinstance(raw, Mapping):
        space_doc = doc.at("space")
        return _parse_space(space_doc, raw, source=None), space_doc
    raise doc.error(("space",), f"must be a search-space file path or a mapping, got {_show(raw)}")


def _study_grid(doc: _Doc, raw: Any, fixed: Mapping[str, Any],
                space: SearchSpace) -> tuple[dict[str, tuple], tuple[dict[str, Any], ...] | None]:
    """``(values per key, rows)``: a mapping grid has no rows (its cells are the product); a
    list of mappings is one row per paper row, for ablations whose rows change several keys
    together (``+ focusing``, ``+ DWC``), each optionally named by ``label``."""
    if isinstance(raw, list):
        return _study_grid_rows(doc, raw, fixed, space)
    m = _mapping(doc, ("grid",), raw, what="a mapping of key to a list of values, or a list of rows (mappings)")
    grid: dict[str, tuple] = {}
    for key, values in m.items():
        path = ("grid", key)
        _check_grid_key(doc, path, key, fixed)
        if not isinstance(values, list) or not values:
            raise doc.error(path, f"must be a non-empty list of values, got {_show(values)}")
        _json(doc, path, values)
        out: list[Any] = []
        for i, value in enumerate(values):
            value = _grid_value(doc, path + (i,), key, value, space)
            if any(same_value(value, v) for v in out):
                raise doc.error(path + (i,), f"duplicate value {thaw(value)!r}, allowed: each value once")
            out.append(value)
        grid[key] = tuple(out)
    return grid, None


def _check_grid_key(doc: _Doc, path: tuple, key: str, fixed: Mapping[str, Any]) -> None:
    _check_not_reserved(doc, path, key)
    if key in fixed:
        raise doc.error(path, "also set in fixed, allowed: a key in either fixed or grid")


def _grid_value(doc: _Doc, path: tuple, key: str, value: Any, space: SearchSpace) -> Any:
    if key in TRAIN_KEYS:
        value = _check_train_value(doc, path, key, value)
    param = space.param(key)
    if param is not None:
        if param.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # so cell keys match what a sampler would store
        if not in_domain(param, value):
            raise doc.error(path, f"{thaw(value)!r} is outside the space's domain for {key!r}, "
                                  f"allowed: {_describe_domain(param)}")
    return freeze(value)


def _study_grid_rows(doc: _Doc, raw: list, fixed: Mapping[str, Any],
                     space: SearchSpace) -> tuple[dict[str, tuple], tuple[dict[str, Any], ...]]:
    if not raw:
        raise doc.error(("grid",), "must be a non-empty list of rows, got an empty list")
    rows: list[dict[str, Any]] = []
    values: dict[str, list] = {}
    for i, item in enumerate(raw):
        path = ("grid", i)
        row_in = _mapping(doc, path, item, what="a mapping of key to value (one row)")
        _json(doc, path, row_in)
        if not row_in or set(row_in) == {LABEL}:
            raise doc.error(path, "a row must set at least one key besides label")
        row: dict[str, Any] = {}
        for key, value in row_in.items():
            if key == LABEL:
                row[key] = _str(doc, path + (key,), value)
                continue
            _check_grid_key(doc, path + (key,), key, fixed)
            row[key] = _grid_value(doc, path + (key,), key, value, space)
        if rows and (LABEL in row) != (LABEL in rows[0]):
            raise doc.error(path, "every row needs a label when one has it, allowed: label all rows or none")
        for j, other in enumerate(rows):
            if LABEL in row and row[LABEL] == other[LABEL]:
                raise doc.error(path + (LABEL,), f"duplicate label {row[LABEL]!r} (also row {j}), allowed: each once")
            if set(other) == set(row) and all(same_value(other[k], row[k]) for k in row):
                raise doc.error(path, f"duplicate of row {j}, allowed: each row once")
        for key, value in row.items():
            known = values.setdefault(key, [])
            if not any(same_value(value, v) for v in known):
                known.append(value)
        rows.append(row)
    return {k: tuple(v) for k, v in values.items()}, tuple(rows)


def _study_objectives(doc: _Doc, raw: Any, task: str, paper_resolution: int | None) -> tuple[Objective, ...]:
    if raw is None:
        return (Objective(_TASK_METRIC[task], OBJECTIVES[_TASK_METRIC[task]]),)
    if not isinstance(raw, list) or not raw:
        raise doc.error(("objectives",), f"must be a non-empty list of {{name, direction}}, got {_show(raw)}")
    names = list(OBJECTIVES)
    out: list[Objective] = []
    for i, item in enumerate(raw):
        path = ("objectives", i)
        if isinstance(item, str):
            item = {"name": item}
        m = _mapping(doc, path, item, _OBJECTIVE_KEYS, required=_OBJECTIVE_REQUIRED)
        name = _one_of(doc, path + ("name",), m["name"], names)
        direction = _one_of(doc, path + ("direction",), m.get("direction", OBJECTIVES[name]), ("maximize", "minimize"))
        if any(o.name == name for o in out):
            raise doc.error(path + ("name",), f"duplicate objective {name!r}, allowed: each objective once")
        metric = _TASK_METRIC[task]
        if name in TRAINING_METRICS and name != metric:
            raise doc.error(path + ("name",), f"{name!r} is not measured by task {task!r}, allowed: {metric!r}, "
                                              + ", ".join(repr(n) for n in names if n not in TRAINING_METRICS))
        if name == "gflops_paper" and paper_resolution is None:
            raise doc.error(path + ("name",), "'gflops_paper' needs paper_resolution, allowed: set "
                                              "paper_resolution (e.g. 224) or use 'gflops'")
        out.append(Objective(name, direction))  # type: ignore[arg-type]
    return tuple(out)


def _study_data(doc: _Doc, raw: Any, task: str = "classify") -> DataSpec:
    m = _mapping(doc, ("data",), raw, _DATA_KEYS)
    allowed = _TASK_DATASETS[task]
    name = _one_of(doc, ("data", "name"), m.get("name", allowed[0]), _DATASETS)
    if name not in allowed:
        raise doc.error(("data", "name"), f"{name!r} is not a data set for task {task!r}, "
                                          f"allowed: {', '.join(map(repr, allowed))}")
    path: str | None = None
    if name == "yolo":
        if m.get("path") is None:
            raise doc.error(("data", "path"), "required key is missing for 'yolo', allowed: an ultralytics data YAML")
        raw_path = _str(doc, ("data", "path"), m["path"])
        resolved = (doc.base_dir / os.path.expanduser(raw_path)).resolve()
        if not resolved.is_file():
            raise doc.error(("data", "path"), f"file not found: {raw_path!r} (looked at {resolved}), "
                                              f"allowed: an ultralytics data YAML relative to this file, or absolute")
        from ablate.data.detection import check_detection_data

        try:
            check_detection_data(resolved)
        except AblateError as err:
            raise doc.error(("data", "path"), str(err)) from None
        path = str(resolved)
    elif name in _FOLDER_DATASETS:
        if m.get("path") is None:
            raise doc.error(("data", "path"), f"required key is missing for {name!r}, allowed: {_FOLDER_DATASETS[name]}")
        raw_path = _str(doc, ("data", "path"), m["path"])
        resolved = (doc.base_dir / os.path.expanduser(raw_path)).resolve()
        if not resolved.is_dir():
            raise doc.error(("data", "path"), f"folder not found: {raw_path!r} (looked at {resolved}), "
                                              f"allowed: a folder relative to this file, or absolute")
        from ablate.data import check_classification_data

        try:  # the loader runs the same structural check, so validate and the run agree
            check_classification_data(name, resolved)
        except AblateError as err:
            raise doc.error(("data", "path"), str(err)) from None
        path = str(resolved)
    elif m.get("path") is not None:
        raise doc.error(("data", "path"), f"not used by {name!r}, allowed: only with name "
                                          + ", ".join(map(repr, ("yolo", *_FOLDER_DATASETS))))
    return DataSpec(
        name=name,
        path=path,
        image_size=_int(doc, ("data", "image_size"), m.get("image_size", _TASK_IMAGE_SIZE[task]), 4, MAX_IMAGE_SIZE),
        val_fraction=_float(doc, ("data", "val_fraction"), m.get("val_fraction", 0.2), 0, 1,
                            open_low=True, open_high=True),
        num_workers=None if m.get("num_workers") is None else _int(doc, ("data", "num_workers"), m["num_workers"], 0, MAX_WORKERS),
    )


def _study_train(doc: _Doc, raw: Any, seed: int) -> TrainSpec:
    """``train:``; a recipe key left out (or null) stays None: the recipe decides it."""
    m = _mapping(doc, ("train",), raw, _TRAIN_SECTION_KEYS)
    v = {**_TRAIN_DEFAULTS, "seed": seed, **m}
    p = lambda key: ("train", key)  # noqa: E731
    epochs = _int(doc, p("epochs"), v["epochs"], 1, MAX_EPOCHS)

    def given(key: str, check: Callable[[Any], Any]) -> Any:
        return None if v.get(key) is None else check(v[key])

    return TrainSpec(
        epochs=epochs,
        batch_size=_check_train_value(doc, p("batch_size"), "batch_size", v["batch_size"]),
        lr=given("lr", lambda x: _check_train_value(doc, p("lr"), "lr", x)),
        weight_decay=given("weight_decay", lambda x: _check_train_value(doc, p("weight_decay"), "weight_decay", x)),
        warmup_epochs=given("warmup_epochs", lambda x: _int(doc, p("warmup_epochs"), x, 0, epochs)),
        seed=_int(doc, p("seed"), v["seed"], 0, 2**32 - 1),
        amp=given("amp", lambda x: _bool(doc, p("amp"), x)),
        compile=_bool(doc, p("compile"), v["compile"]),
        label_smoothing=given("label_smoothing",
                              lambda x: _check_train_value(doc, p("label_smoothing"), "label_smoothing", x)),
        recipe=given("recipe", lambda x: _check_train_value(doc, p("recipe"), "recipe", x)),
        lr_batch=given("lr_batch", lambda x: _int(doc, p("lr_batch"), x, 1, MAX_BATCH)),
        **{key: given(key, lambda x, key=key: _check_train_value(doc, p(key), key, x))
           for key in ("randaugment", "random_erasing", "mixup", "cutmix", "clip_grad", "ema_decay")},
    )


def _study_baseline(doc: _Doc, raw: Any, cells: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The grid cell every other row is compared with: the one ``baseline`` picks (grid keys
    and values, or a row's label), else the first cell. Sampled studies have none."""
    path = ("baseline",)
    if not cells:
        if raw is not None:
            raise doc.error(path, "a baseline is a row of a grid, and this study has no grid, allowed: drop baseline")
        return None
    if raw is None:
        return dict(cells[0])
    if isinstance(raw, str):
        labelled = [c for c in cells if c.get(LABEL) == raw]
        if not labelled:
            labels = [c[LABEL] for c in cells if LABEL in c]
            raise doc.error(path, f"no grid row is labelled {raw!r}, allowed: "
                                  + (", ".join(map(repr, labels)) if labels else "grid keys and values, e.g. "
                                     + repr({k: thaw(v) for k, v in cells[0].items()})))
        return dict(labelled[0])
    m = _mapping(doc, path, raw, what="the grid keys and values of one row, or a row's label")
    matching = [c for c in cells if all(k in c and same_value(freeze(c[k]), freeze(v)) for k, v in m.items())]
    if len(matching) != 1:
        rows = "; ".join(repr({k: thaw(v) for k, v in c.items()}) for c in cells[:6])
        what = "matches no grid row" if not matching else f"matches {len(matching)} grid rows"
        raise doc.error(path, f"{thaw(m)!r} {what}, allowed: keys and values that pick one row of: {rows}")
    return dict(matching[0])


def _study_sampler(doc: _Doc, raw: Any, grid: Mapping[str, Any], seed: int) -> SamplerSpec:
    m = _mapping(doc, ("sampler",), raw, _SAMPLER_KEYS)
    name = _one_of(doc, ("sampler", "name"), m.get("name", "grid" if grid else "tpe"), _SAMPLERS)
    if name == "grid" and not grid:
        raise doc.error(("sampler", "name"), "'grid' needs a grid, allowed: add grid: {key: [values]}, "
                                             "or one of 'random', 'tpe', 'nsga2'")
    if grid and name != "grid":
        raise doc.error(("sampler", "name"), f"a study with a grid trains every cell once, so {name!r} has nothing "
                                             f"to choose, allowed: 'grid' (or drop grid and give trials)")
    population = m.get("population_size")
    if population is not None:
        if name != "nsga2":
            raise doc.error(("sampler", "population_size"), f"only NSGA-II has a population, got sampler {name!r}, "
                                                            "allowed: name: nsga2, or drop population_size")
        population = _int(doc, ("sampler", "population_size"), population, 2, 10_000)
    # `seed: null` is an unseeded sampler: drivers sharing a study then propose different candidates.
    chosen = m.get("seed", seed)
    sampler_seed = None if chosen is None else _int(doc, ("sampler", "seed"), chosen, 0, 2**32 - 1)
    return SamplerSpec(name=name, seed=sampler_seed, population_size=population)  # type: ignore[arg-type]


def _study_scheduler(doc: _Doc, raw: Any, train: TrainSpec, objectives: tuple[Objective, ...]) -> SchedulerSpec | None:
    if raw is None:
        return None
    m = _mapping(doc, ("scheduler",), raw, _SCHEDULER_KEYS)
    name = _one_of(doc, ("scheduler", "name"), m.get("name", "asha"), _SCHEDULERS)
    if not any(o.name in TRAINING_METRICS for o in objectives):
        raise doc.error(("scheduler",), "early stopping needs a training objective to watch, "
                                        f"allowed: add objective {', '.join(map(repr, TRAINING_METRICS))}, "
                                        "or drop scheduler")
    grace = _int(doc, ("scheduler", "grace_period"), m.get("grace_period", 1), 1, train.epochs)
    factor = _float(doc, ("scheduler", "reduction_factor"), m.get("reduction_factor", 2), 1, MAX_REDUCTION, open_low=True)
    return SchedulerSpec(name=name, grace_period=grace, reduction_factor=factor)  # type: ignore[arg-type]


def _storage(doc: _Doc, raw: Any) -> str:
    """The storage URL as written, ``${NAME}`` references kept (expanded only when connecting,
    so the study, its stored spec and every display keep them); a relative SQLite path made
    absolute (Ray moves each worker's working directory)."""
    from ablate.errors import StorageError
    from ablate.storage import display_url, storage_variables

    if not isinstance(raw, str):  # never quoted back: a URL typed as a list may hold a password
        raise doc.error(("storage",), f"must be a string (an SQLAlchemy URL), got {type(raw).__name__}, "
                                      f"allowed: e.g. sqlite:///runs/x.db, postgresql://host/db")
    url = raw
    try:
        storage_variables(url)
    except StorageError as err:
        raise doc.error(("storage",), str(err)) from None
    if not _URL_RE.match(url) and not url.startswith("${"):
        raise doc.error(("storage",), f"must be an SQLAlchemy URL, got {display_url(url)!r}, "
                                      f"allowed: e.g. sqlite:///runs/x.db, postgresql://host/db, "
                                      f"${{NAME}} parts from the environment")
    prefix = "sqlite:///"
    if url.startswith(prefix):
        rest, sep, query = url[len(prefix):].partition("?")
        if rest and not rest.startswith(("/", ":memory:", "${")):
            url = prefix + os.path.abspath(rest) + sep + query
    return url


def _study_trackers(doc: _Doc, raw: Any) -> TrackersSpec | None:
    """The ``trackers:`` section checked; None when left out, null or empty.

    Raises:
        ConfigError: ``file:line: trackers.KEY: what, allowed: ...``.
    """
    if raw is None:
        return None
    m = _mapping(doc, ("trackers",), raw, TRACKER_KEYS)
    out: dict[str, str] = {}
    for key, convert in (("mlflow", mlflow_uri), ("tensorboard", tracker_dir)):
        value = m.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise doc.error(("trackers", key), f"must be a string, got {type(value).__name__}, allowed: "
                                               + (_ALLOWED_MLFLOW if key == "mlflow" else "a directory, e.g. runs/tb"))
        try:
            out[key] = convert(value)
        except ValueError as err:
            raise doc.error(("trackers", key), str(err)) from None
    spec = TrackersSpec(**out)
    return spec if spec else None
