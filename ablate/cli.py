"""The ``ablate`` command line: a thin Typer app over the library.

Heavy imports (torch, ray, optuna) happen inside the commands so ``ablate --help`` is instant.
Any :class:`~ablate.errors.AblateError` becomes one line on stderr and exit code 2;
anything else is a bug and keeps its traceback (``ABLATE_DEBUG=1`` shows tracebacks always).
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from ablate.errors import AblateError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Neural-architecture search and ablation studies for vision attention.")


def _print_version(value: bool) -> None:
    if value:
        from ablate import __version__

        typer.echo(f"ablate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print ablate's version and exit.")) -> None:
    """Neural-architecture search and ablation studies for vision attention."""


class ShowFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class ProfileFormat(str, Enum):
    table = "table"
    json = "json"


class Scale(str, Enum):
    proxy = "proxy"
    paper = "paper"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


# --------------------------------------------------------------------------- run


@app.command()
def run(
    study_file: Path = typer.Argument(..., help="Study YAML file."),
    trials: Optional[int] = typer.Option(None, "--trials", min=0, help="Total number of configurations the study "
                                                                       "should have (overrides `trials:`); each is "
                                                                       "trained `repeats` times."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, max=1000,
                                          help="Seeds per configuration (overrides `repeats:`); raising it later "
                                               "trains only the new seeds."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    address: Optional[str] = typer.Option(None, "--address", help="Address of an existing Ray cluster "
                                                                  "(default: start a local one on 127.0.0.1)."),
    device: Device = typer.Option(Device.auto, "--device", help="Where trials train."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build every candidate and print its costs; "
                                                          "no training, nothing written."),
    scale: Scale = typer.Option(Scale.proxy, "--scale", help="proxy: train the study's `proxy:` overrides "
                                                             "(laptop scale); paper: the papers' models."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-trial lines."),
) -> None:
    """Run (or resume) a study: every trial builds, measures and trains one candidate."""
    from ablate.config import load_study

    study = load_study(study_file, scale=scale.value)
    if repeats is not None:
        import dataclasses

        study = dataclasses.replace(study, repeats=repeats)
    if dry_run:
        _dry_run(study, trials)
        _dry_run_power(study, storage)
        return
    from ablate.run import run_study

    try:
        summary = run_study(study, storage=storage, trials=trials, address=address, device=device.value,
                            progress=not quiet)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished trials are kept, running ones are recorded as FAIL (interrupted); "
                   "run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    if summary.message:
        typer.echo(summary.message)
    states = ", ".join(f"{k} {v}" for k, v in sorted(summary.states.items()))
    typer.echo(f"{study.name}: {len(summary.new_trials)} new trial(s) in {summary.wall_s:.1f}s; "
               f"the study now has {states or 'no trials'}")
    from ablate.storage import display_url

    typer.echo(f"storage: {display_url(summary.storage)}")
    if not quiet and summary.states.get("COMPLETE"):  # the result, per configuration, as `ablate show` gives it
        from ablate.results import load_results

        _print_configs(load_results(summary.storage, study.name))
    typer.echo(f"next: ablate show {study_file}" + (f" --storage '{display_url(storage)}'" if storage else ""))


def _dry_run(study, trials: Optional[int]) -> None:
    """Build and measure every candidate (and its paper-scale model) without training."""
    from rich.console import Console
    from rich.table import Table

    from ablate.run.trial import study_costs

    if study.is_grid:
        cells = study.cells()
    else:
        import optuna

        from ablate.space import suggest

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.RandomSampler(seed=study.sampler.seed)
        scratch = optuna.create_study(sampler=sampler)
        cells = [suggest(scratch.ask(), study.free_space, study.fixed) for _ in range(trials or study.trials)]
    columns = ["params_m", "gflops"]
    if study.paper_resolution:
        columns += ["params_m_paper", "gflops_paper"]
    if study.task == "detect":
        columns.append("gflops_ultralytics")
    where = f"{study.scale} scale, trained at {study.data.image_size} px" + (
        f", paper-scale costs at {study.paper_resolution} px" if study.paper_resolution else "")
    table = Table(title=f"{study.name}: {len(cells)} candidate(s), not trained ({where})")
    for col in ("#", "params", *columns):
        table.add_column(col)
    console = Console()
    for i, cell in enumerate(cells):
        try:
            costs = study_costs(study, cell)
            row = [f"{costs[c]:.4f}" if c == "gflops" else f"{costs[c]:.3f}" for c in columns]
        except AblateError as err:
            row = [f"infeasible: {err}"] + [""] * (len(columns) - 1)
        table.add_row(str(i), ", ".join(f"{k}={v}" for k, v in cell.items()), *row)
    console.print(table)


def _dry_run_power(study, storage: Optional[str]) -> None:
    """How many seeds would resolve the paper's differences, at the noise the database measured."""
    from ablate.config import TRAINING_METRICS
    from ablate.results import load_results, reference_repeats
    from ablate.storage import display_url

    if not study.is_grid or not (study.reference or {}).get("rows"):
        return
    url = storage or study.storage
    metrics = [o.name for o in study.objectives if o.name in TRAINING_METRICS]
    try:
        noise = load_results(url, study.name).noise
    except AblateError:
        noise = {}
    sigma = {m: noise[m]["pooled_std"] for m in metrics if noise.get(m, {}).get("pooled_std") is not None}
    if not sigma:
        typer.echo(f"repeats needed: no seed noise measured yet in {display_url(url)} (it needs a configuration "
                   f"with 2 or more COMPLETE runs); run with --repeats 2 or more first")
        return
    rows = reference_repeats(study.reference, study.baseline_cell(), sigma)
    if not rows:
        typer.echo("repeats needed: the reference rows print no difference to the baseline row")
        return
    typer.echo(f"repeats needed to resolve the paper's differences to the baseline row (two-sided t-test, "
               f"alpha 0.05, power 0.8), at the seed noise measured in {display_url(url)} "
               f"({study.scale} scale):")
    for r in rows:
        shown = ", ".join(f"{k}={v}" for k, v in r["row"].items())
        need = f"{r['repeats']} seeds per row" if r["repeats"] else "not detectable"
        typer.echo(f"  {shown}: {r['objective']} {r['diff']:+.2f} (paper) vs seed std {r['sigma']:.3g} -> {need}")


# --------------------------------------------------------------------------- show


def _target(target: str, storage: Optional[str]) -> tuple[str, Optional[str]]:
    """(storage URL, study name or None) for a study file, a database file or a URL."""
    from ablate.storage import storage_url_for

    if target.endswith((".yaml", ".yml")):
        from ablate.config import load_study

        study = load_study(target, check=False)
        return storage or study.storage, study.name
    if "://" not in target and not Path(target).exists():
        raise ConfigError(f"{target}: no such study file or database")
    return storage or storage_url_for(target), None


class ShowView(str, Enum):
    both = "both"
    configs = "configs"
    trials = "trials"


@app.command()
def show(
    target: str = typer.Argument(..., help="Study YAML, a .db file or a storage URL."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    fmt: ShowFormat = typer.Option(ShowFormat.table, "--format", help="Output format."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the storage holds several."),
    view: Optional[ShowView] = typer.Option(
        None, "--view", help="configs (one row per configuration: n, mean ± 95 % interval, verdict against the "
                             "baseline), trials (one row per trial) or both. Default: both for the table, configs "
                             "for csv; json always has both."),
) -> None:
    """Print a study's configurations (mean ± 95 % interval over the seeds) and trials, and mark the Pareto front."""
    from ablate.results import load_results

    chosen = view or (ShowView.configs if fmt == ShowFormat.csv else ShowView.both)
    if fmt == ShowFormat.csv and chosen == ShowView.both:
        raise ConfigError("--view both: a CSV holds one table, allowed: --view configs or --view trials")
    url, name = _target(target, storage)
    results = load_results(url, study_name or name)
    if fmt == ShowFormat.json:
        _echo_json(results.to_json())
    elif fmt == ShowFormat.csv:
        from ablate.results.report import configs_csv

        typer.echo(configs_csv(results) if chosen == ShowView.configs else _csv(results), nl=False)
    else:
        if chosen != ShowView.trials:
            _print_configs(results)
        if chosen != ShowView.configs:
            _print_table(results)


_COST_ATTRS = ("params_m", "gflops", "gflops_paper", "epochs_done", "wall_s")


def _csv(results) -> str:
    import csv
    import io

    objective_names = [o["name"] for o in results.objectives]
    param_names = sorted({k for p in results.trials.get("params", []) for k in p})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["number", "state", "pareto", *param_names, *[f"value_{n}" for n in objective_names],
                     *_COST_ATTRS, "error"])
    for r in results.trials.itertuples(index=False):
        writer.writerow([r.number, r.state, int(r.number in results.pareto),
                         *[json.dumps(r.params[k]) if isinstance(r.params.get(k), list) else r.params.get(k, "")
                           for k in param_names],
                         *[r.values.get(n, "") for n in objective_names],
                         *[r.attrs.get(a, "") for a in _COST_ATTRS], r.attrs.get("error", "")])
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _print_configs(results) -> None:
    """The per-configuration table of `ablate show`, then the study's noise floor."""
    from rich.console import Console
    from rich.table import Table

    from ablate.results.report import config_rows, noise_text

    title, header, rows = config_rows(results)
    table = Table(title=title)
    for i, col in enumerate(header):  # numbers stay on one line; settings and trial lists fold
        table.add_column(col, overflow="fold", no_wrap=any(" ± " in r[i] or r[i][:1] in "+-" for r in rows))
    for row in rows:
        table.add_row(*row)
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(noise_text(results), highlight=False)


def _print_table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    from ablate.storage import display_url

    objective_names = [o["name"] for o in results.objectives]
    param_names = sorted({k for p in results.trials.get("params", []) for k in p})
    attrs = [a for a in _COST_ATTRS if a not in objective_names]
    title = (f"{results.name} ({display_url(results.storage)}): {len(results.trials)} trial(s), "
             "★ = Pareto front of the trials")
    table = Table(title=title)
    for col in ["#", "state", "★", *param_names,
                *[f"{o['name']} {'↑' if o['direction'] == 'maximize' else '↓'}" for o in results.objectives],
                *[a.replace("epochs_done", "epochs") for a in attrs], "error"]:
        table.add_column(col, overflow="fold")
    for r in results.trials.itertuples(index=False):
        table.add_row(str(r.number), r.state, "★" if r.number in results.pareto else "",
                      *[_fmt(r.params.get(k)) for k in param_names],
                      *[_fmt(r.values.get(n)) for n in objective_names],
                      *[_fmt(r.attrs.get(a)) for a in attrs], _fmt(r.attrs.get("error"))[:120])
    Console(width=max(120, Console().width)).print(table)


class ReportFormat(str, Enum):
    md = "md"
    latex = "latex"
    csv = "csv"
    html = "html"
    png = "png"


_REPORT_SUFFIXES = {".md": "md", ".tex": "latex", ".csv": "csv", ".html": "html", ".htm": "html", ".png": "png"}


@app.command()
def report(
    target: str = typer.Argument(..., help="Study YAML, a .db file or a storage URL."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    fmt: Optional[ReportFormat] = typer.Option(None, "--format", help="md | latex | csv | html | png "
                                                                      "(default: from -o's suffix, else md)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of standard output."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the storage holds several."),
) -> None:
    """The ablation table and Pareto front of a study, for a paper or a pull request."""
    chosen = fmt.value if fmt is not None else _REPORT_SUFFIXES.get(output.suffix.lower(), "md") if output else "md"
    if chosen == "png" and output is None:
        raise ConfigError("--format png writes an image: give -o FILE.png")
    if output is not None and not output.parent.exists():
        raise ConfigError(f"-o {output}: folder {str(output.parent)!r} does not exist")
    from ablate.errors import StorageError
    from ablate.results.report import render_report
    from ablate.results import load_results

    url, name = _target(target, storage)
    results = load_results(url, study_name or name)
    if results.trials.empty:
        raise StorageError(f"study {results.name!r} in {url!r} has no trials yet: nothing to report "
                           f"(run it with `ablate run`)")
    out = render_report(results, chosen)
    if output is None:
        typer.echo(out, nl=False)
        return
    if isinstance(out, bytes):
        output.write_bytes(out)
    else:
        output.write_text(out, encoding="utf-8")
    from ablate.results.report import front_text

    typer.echo(f"wrote {output} ({chosen}, {len(results.trials)} trial(s), {len(results.configs)} configuration(s), "
               f"front of the means: trials {front_text(results)})", err=True)


@app.command()
def dashboard(
    targets: Optional[list[str]] = typer.Argument(None, help="Study YAMLs, .db files, folders of .db files or "
                                                             "storage URLs (default: runs/)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8050, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    refresh: float = typer.Option(5.0, "--refresh", min=0.5, help="Seconds between checks for new results."),
) -> None:
    """Serve the web dashboard (Pareto plots, trials, ablation tables) over study databases; reads only."""
    from ablate.errors import StorageError

    targets = list(targets or [])
    if not targets:
        if not Path("runs").is_dir():
            raise ConfigError("no study given and no runs/ folder here: name a study file, a .db file, a folder "
                              "or a storage URL")
        targets = ["runs"]
    from ablate.dashboards import Sources, create_app, make_server, resolve_targets

    sources = Sources(resolve_targets(targets))
    refs, errors = sources.studies()
    for url, err in errors:
        if len(sources.targets) == 1 and not isinstance(sources.targets[0], Path):
            raise StorageError(err)  # the only thing asked for cannot be read
        typer.echo(f"warning: {err}", err=True)
    for ref in refs:  # read every study once now, so that the first page is quick
        sources.read(ref)
    try:
        server = make_server(create_app(sources, refresh_s=refresh), host, port)
    except OSError as err:
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err}); "
                          f"pick another with --port") from None
    shown = f"[{host}]" if ":" in host else host  # the bound address: "localhost" may resolve to ::1 first
    where = f"http://{shown}:{server.server_port}/"
    typer.echo(f"ablate dashboard: {len(refs)} stud{'y' if len(refs) == 1 else 'ies'} in "
               f"{len(sources.storages())} storage(s), serving {where}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()


# --------------------------------------------------------------------------- validate


@app.command()
def validate(study_files: list[Path] = typer.Argument(..., help="Study YAML files.")) -> None:
    """Check study files (and the spaces they use) without running anything."""
    from ablate.config import load_study

    failed = 0
    for path in study_files:
        try:
            study = load_study(path)
        except AblateError as err:
            typer.echo(f"error: {err}", err=True)
            failed += 1
            continue
        what = f"{len(study.cells())} grid cell(s)" if study.is_grid else \
            f"{len(study.free_space.params)} searched param(s), {study.trials} trial(s)"
        typer.echo(f"ok: {path}: {study.name}, {what}, storage {study.storage}")
    if failed:
        raise typer.Exit(2)


# --------------------------------------------------------------------------- profile


@app.command()
def profile(
    target: Optional[str] = typer.Argument(None, help="A preset name (see --list) or a study YAML."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Input side in pixels "
                                                                               "(default: the preset's, or the study's image size)."),
    fmt: ProfileFormat = typer.Option(ProfileFormat.table, "--format", help="Output format."),
    list_presets: bool = typer.Option(False, "--list", help="List the presets and their published figures."),
) -> None:
    """Parameters and FLOPs (multiply-adds) of a preset or of a study's candidates.

    YOLO models also get ``gflops_ultralytics``: the figure ultralytics prints, at 640 px.
    """
    if list_presets:
        rows = _preset_list()
        if fmt == ProfileFormat.json:
            _echo_json(rows)
        else:
            for r in rows:
                flag = "" if r.get("verified", True) else "  (not paper-verified)"
                typer.echo(f"{r['name']:<22} {r.get('params_m', '?'):>7}M {r.get('gflops', '?'):>6}G @ "
                           f"{r.get('resolution', 224)}  {r.get('source', '')}{flag}")
        return
    if target is None:
        raise ConfigError("profile: give a preset name or a study file (or --list)")
    rows = _profile_rows(target, resolution)
    if fmt == ProfileFormat.json:
        _echo_json(rows[0] if len(rows) == 1 else rows)
    else:
        for r in rows:
            extra = (f"  {r['gflops_ultralytics']:>7.2f} GFLOPs as ultralytics prints (640 px)"
                     if "gflops_ultralytics" in r else "")
            typer.echo(f"{r['name']:<40} {r['resolution']:>4}px  {r['params_m']:>9.3f}M params  "
                       f"{r['gflops']:>9.4f} GFLOPs (multiply-adds){extra}")


def _preset_list() -> list[dict]:
    """Every preset (ViT, then YOLO) with its published figures."""
    from ablate.models.presets import PRESET_INFO, list_presets as names
    from ablate.models.yolo import YOLO_PRESET_INFO, list_yolo_presets

    return ([{"name": n, **PRESET_INFO.get(n, {})} for n in names()]
            + [{"name": n, **YOLO_PRESET_INFO.get(n, {})} for n in list_yolo_presets()])


def _yolo_size(resolution: Optional[int], default: int) -> int:
    size = resolution or default
    if size % 32:
        raise ConfigError(f"--resolution must be a multiple of 32 for a YOLO model (its largest stride), got {size}")
    return size


def _profile_rows(target: str, resolution: Optional[int]) -> list[dict]:
    from ablate.measure import profile as measure
    from ablate.models import build

    if target.endswith((".yaml", ".yml")):
        from ablate.config import load_study
        from ablate.run.trial import candidate_arch

        study = load_study(target)
        cells = study.cells() if study.is_grid else [{}]
        rows = []
        for cell in cells:
            arch = candidate_arch(study, cell)
            label = study.name + ("[" + ", ".join(f"{k}={v}" for k, v in cell.items()) + "]" if cell else "")
            if "base" in arch:  # a YOLO candidate
                from ablate.models.yolo import profile_yolo

                size = _yolo_size(resolution, int(arch["img_size"]))
                rows.append({"name": label, "resolution": size, **profile_yolo(arch, size)})
                continue
            size = resolution or int(arch["img_size"])
            rows.append({"name": label, "resolution": size, **measure(build({**arch, "img_size": size}), size)})
        return rows
    from ablate.models.presets import list_presets as vit_presets, preset_arch

    if target not in vit_presets():
        import difflib

        from ablate.models.yolo import list_yolo_presets, profile_yolo

        if target not in list_yolo_presets():
            valid = vit_presets() + list_yolo_presets()
            hint = difflib.get_close_matches(target, valid, n=1)
            raise ConfigError(f"unknown preset {target!r}, allowed: {', '.join(valid)}"
                              + (f"; did you mean {hint[0]!r}?" if hint else ""))
        size = _yolo_size(resolution, 640)
        return [{"name": target, "resolution": size, **profile_yolo({"preset": target}, size)}]
    arch = preset_arch(target)
    size = resolution or int(arch.get("img_size", 224))
    return [{"name": target, "resolution": size, **measure(build({**arch, "img_size": size}), size)}]


# --------------------------------------------------------------------------- export


@app.command()
def export(
    target: str = typer.Argument(..., help="Study YAML, a .db file or a storage URL."),
    trial: int = typer.Option(..., "--trial", min=0, help="Trial number (as `ablate show` lists it)."),
    out: Path = typer.Option(..., "-o", "--output", help="Model YAML to write (.yaml)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the storage holds several."),
) -> None:
    """Write a detection trial's candidate as an ultralytics model YAML (`YOLO(FILE)` builds it)."""
    from ablate.results import load_results

    url, name = _target(target, storage)
    results = load_results(url, study_name or name)
    where = f"{target}: study {results.name!r}"
    task = (results.spec or {}).get("task")
    if task not in (None, "detect"):
        raise ConfigError(f"{where} is a {task!r} study; export writes ultralytics models of detection studies "
                          f"(task: 'detect')")
    frame = results.trials
    match = frame[frame["number"] == trial] if len(frame) else frame
    if not len(match):
        numbers = sorted(int(n) for n in frame["number"]) if len(frame) else []
        have = f"its trials are {numbers[0]}..{numbers[-1]}" if numbers else "it has no trials"
        raise ConfigError(f"{where} has no trial {trial}; {have}")
    row = match.iloc[0]
    arch = row["attrs"].get("arch")
    if arch is None:
        error = row["attrs"].get("error")
        raise ConfigError(f"{where}: trial {trial} ({row['state']}) stored no arch"
                          + (f" (it failed: {str(error).splitlines()[0][:200]})" if error else ""))
    if not isinstance(arch, dict) or "base" not in arch:
        raise ConfigError(f"{where}: trial {trial}'s arch is not a YOLO candidate (no 'base' key); "
                          "export writes ultralytics models of detection studies")
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: folder {out.parent} does not exist")
    from ablate.models.yolo import export_yolo_yaml

    path = export_yolo_yaml(arch, out)
    typer.echo(f"wrote {path}: trial {trial} of {results.name} ({arch['base']}, attention {arch.get('attention')!r})")
    typer.echo(f"build it: python -c \"import ablate.models.yolo; from ultralytics import YOLO; YOLO('{path}')\"")


# --------------------------------------------------------------------------- bench

bench_app = typer.Typer(no_args_is_help=True, help="Micro-benchmarks of the building blocks.")
app.add_typer(bench_app, name="bench")


class BenchDevice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


@bench_app.command("attention")
def bench_attention(
    families: Optional[str] = typer.Option(None, "--families", help="Comma-separated families (default: every "
                                                                    "registered one plus softmax+bias and "
                                                                    "softmax-window); the global softmax "
                                                                    "SDPA baseline is always measured."),
    resolutions: str = typer.Option("14,28,56", "--resolutions", help="Token grid sides r (an r×r map), "
                                                                      "comma-separated."),
    dim: int = typer.Option(64, "--dim", help="Channels."),
    heads: int = typer.Option(2, "--heads", help="Attention heads (must divide --dim)."),
    device: BenchDevice = typer.Option(BenchDevice.cpu, "--device", help="Where to measure."),
    fmt: ProfileFormat = typer.Option(ProfileFormat.table, "--format", help="Output format."),
    repeats: int = typer.Option(10, "--repeats", help="Timed passes; the median is reported."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed passes before the timed ones."),
    batch: int = typer.Option(1, "--batch", help="Images per pass."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: torch's, usually "
                                                                  "one per core)."),
) -> None:
    """Time, peak memory and FLOPs of each attention family vs global softmax, per token grid."""
    from ablate.bench import bench_attention as run_bench, make_config, print_table

    cfg = make_config(families, resolutions, dim=dim, heads=heads, device=device.value, batch=batch,
                      repeats=repeats, warmup=warmup, threads=threads)
    result = run_bench(cfg, progress=lambda line: typer.echo(line, err=True))
    if fmt == ProfileFormat.json:
        _echo_json(result)
    else:
        print_table(result)


# --------------------------------------------------------------------------- data

data_app = typer.Typer(no_args_is_help=True, help="Data sets: write the generated detection set.")
app.add_typer(data_app, name="data")


@data_app.command("synth-det")
def data_synth_det(
    out: Path = typer.Option(..., "--out", help="Folder to create (it must not exist, or be empty)."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes byte-identical files."),
    n_train: int = typer.Option(1024, "--train", help="Training images."),
    n_val: int = typer.Option(64, "--val", help="Validation images."),
    image_size: int = typer.Option(128, "--image-size", help="Image side in pixels."),
    classes: str = typer.Option("circle,square,triangle", "--classes",
                                help="Comma-separated shapes, in class order: circle, square, triangle, "
                                     "cross, star."),
) -> None:
    """Write the synthetic YOLO-format detection set (shapes on textured backgrounds) and its data.yaml."""
    import time

    from ablate.data.detection import generate_synth_det

    start = time.perf_counter()
    yaml_path = generate_synth_det(out, seed=seed, n_train=n_train, n_val=n_val, image_size=image_size,
                                   classes=classes)
    names = [c.strip() for c in classes.split(",") if c.strip()]
    typer.echo(str(yaml_path))
    typer.echo(f"{n_train} train / {n_val} val images of {image_size} px, {len(names)} classes "
               f"({', '.join(names)}), seed {seed}, {time.perf_counter() - start:.1f}s")


# --------------------------------------------------------------------------- entry point


def main() -> None:
    """Console-script entry: one line and exit 2 for bad input, tracebacks only for bugs."""
    try:
        app()
    except AblateError as err:
        if os.environ.get("ABLATE_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
