"""`ablate run`: run or resume a study, or (``--dry-run``) build and measure every candidate."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ablate.cli.common import app
from ablate.errors import AblateError, ConfigError


class Scale(str, Enum):
    proxy = "proxy"
    paper = "paper"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def run(
    study_file: Path = typer.Argument(..., help="Study YAML file."),
    overrides: Optional[list[str]] = typer.Argument(
        None, metavar="KEY=VALUE",
        help="Settings that replace the file's, validated like it and stored with the study: dotted keys, "
             "YAML values (train.epochs=1 data.name=imagefolder data.path=/data/imagenet grid.window_size=[7,14]). "
             "They win over the study's proxy: section at --scale proxy; a relative data.path is taken from the current folder."),
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
    max_retries: int = typer.Option(1, "--max-retries", min=0, max=100,
                                    help="How often a run whose process died (killed, out of memory, a lost node "
                                         "or driver) trains again; a run that fails by its own error does not."),
    heartbeat_grace: float = typer.Option(60.0, "--heartbeat-grace", min=5.0, max=86400.0,
                                          help="Seconds another driver's silent runs are kept before this one "
                                               "treats them as dead and takes them over."),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", metavar="DIR|URI",
                                         help="Also log every trial to MLflow: a directory (its local file store) "
                                              "or a tracking URI; replaces the study's trackers.mlflow. Needs "
                                              "`pip install 'ablate\\[trackers]'`."),  # \\[: not rich markup
    tensorboard: Optional[str] = typer.Option(None, "--tensorboard", metavar="DIR",
                                              help="Also write TensorBoard event files, one folder per trial under "
                                                   "DIR/<study>/; replaces the study's trackers.tensorboard."),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", metavar="DIR",
                                             help="Where classification trials keep their trained weights "
                                                  "(DIR/<study>/trial-N.safetensors; default: beside a SQLite "
                                                  "database, runs/x.db -> runs/x.artifacts/, else "
                                                  "runs/<study>.artifacts/). Several drivers or a Ray cluster "
                                                  "need a folder every node sees."),
) -> None:
    """Run (or resume) a study: every trial builds, measures and trains one candidate."""
    from ablate.cli.validate import checked_study

    if not quiet and not dry_run:  # a bad ABLATE_PROGRESS_INTERVAL is refused before anything is opened
        from ablate.run.progress import progress_interval

        progress_interval()
    # The check `ablate validate --scale SCALE` makes, through the same function: one verdict.
    study = checked_study(study_file, scale.value, storage, overrides=overrides or ())
    if study is None:
        raise typer.Exit(2)
    parsed = ()
    if overrides:  # also with -q: a log should say what ran
        from ablate.study.overrides import parse_overrides, shown_overrides

        parsed = parse_overrides(overrides, str(study_file))
        typer.echo(shown_overrides(parsed))
    if repeats is not None:
        import dataclasses

        study = dataclasses.replace(study, repeats=repeats)
    if dry_run:
        _dry_run(study, trials)
        _dry_run_power(study, storage)
        return
    from contextlib import nullcontext

    from ablate.run import ray_session, run_study
    from ablate.run.trackers import Trackers

    study, flags = _tracker_flags(study, mlflow, tensorboard)
    trackers = Trackers.open(study, flags=flags)  # checked before anything is stored or started
    try:
        # A cluster is joined before the storage is opened: one that cannot be reached or
        # joined exits 2 with one line and writes nothing. run_study uses that connection.
        with ray_session(address) if address else nullcontext():
            summary = run_study(study, storage=storage, trials=trials, address=address, device=device.value,
                                progress=not quiet, max_retries=max_retries, heartbeat_grace_s=heartbeat_grace,
                                trackers=trackers, artifacts=artifacts)
    except ConfigError as err:
        if not overrides:
            raise
        # e.g. the stored spec differs: say which command-line values took part, not only the file
        raise ConfigError(f"{err} (with overrides {' '.join(o.text for o in parsed)})") from None
    except KeyboardInterrupt as err:  # SIGINT: 130, SIGTERM: 143 (ablate.run.ray_cluster.Interrupted)
        typer.echo("interrupted: finished trials are kept, running ones are recorded as FAIL (interrupted); "
                   "run the same command again to resume", err=True)
        raise typer.Exit(getattr(err, "exit_code", 130)) from None
    if summary.message:
        typer.echo(summary.message)
    states = ", ".join(f"{k} {v}" for k, v in sorted(summary.states.items()))
    typer.echo(f"{study.name}: {len(summary.new_trials)} new trial(s) in {summary.wall_s:.1f}s; "
               f"the study now has {states or 'no trials'}")
    from ablate.storage import display_url

    typer.echo(f"storage: {display_url(summary.storage)}")
    if not quiet and summary.states.get("COMPLETE"):  # the result, per configuration, as `ablate show` gives it
        from ablate.cli.show import print_configs
        from ablate.results import load_results

        print_configs(load_results(summary.storage, study.name))
    # With overrides the file alone no longer names what ran (its name or storage may be overridden).
    target = f"ablate show {study_file}" if not overrides else \
        f"ablate show '{display_url(summary.storage)}' --study {study.name}"
    typer.echo(f"next: {target}" + (f" --storage '{display_url(storage)}'" if storage and not overrides else ""))


def _tracker_flags(study, mlflow: Optional[str], tensorboard: Optional[str]):
    """``study`` with ``--mlflow`` / ``--tensorboard`` in its trackers, and which of them came from flags."""
    import dataclasses

    from ablate.errors import ConfigError
    from ablate.study.trackers import TrackersSpec, mlflow_uri, tracker_dir

    spec = study.trackers or TrackersSpec()
    flags = []
    for name, value, convert in (("mlflow", mlflow, mlflow_uri), ("tensorboard", tensorboard, tracker_dir)):
        if value is not None:
            try:
                spec = dataclasses.replace(spec, **{name: convert(value)})
            except ValueError as err:
                raise ConfigError(f"--{name}: {err}") from None
            flags.append(name)
    return dataclasses.replace(study, trackers=spec or None), tuple(flags)


def _dry_run(study, trials: Optional[int]) -> None:
    """Build and measure every candidate (and its paper-scale model) without training."""
    from rich.console import Console

    from ablate.cli.table_fit import TextColumn, count_text, fit, flops_text, render, terminal_width, wrapped
    from ablate.models.memory import format_bytes, machine_memory, memory_guard
    from ablate.run.trial import study_costs

    if study.is_grid:
        cells = study.cells()  # a grid is enumerated, not sampled
    else:
        import warnings

        import optuna

        from ablate.run.optuna_study import make_sampler
        from ablate.study.space import suggest

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():  # TPE's multivariate/constant_liar are experimental: no noise here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # The runner's sampler on an empty in-memory study: the first candidates a run would propose.
            scratch = optuna.create_study(directions=[o.direction for o in study.objectives],
                                          sampler=make_sampler(study))
            cells = [suggest(scratch.ask(), study.free_space, study.fixed) for _ in range(trials or study.trials)]
    columns = ["params_m", "gflops"]
    if study.paper_resolution:
        columns += ["params_m_paper", "gflops_paper"]
    if study.task == "detect":
        columns.append("gflops_ultralytics")
    where = f"{study.scale} scale, trained at {study.data.image_size} px" + (
        f", paper-scale costs at {study.paper_resolution} px" if study.paper_resolution else "")
    limit = machine_memory()
    rows = []
    for i, cell in enumerate(cells):
        try:
            memory = _step_memory(study, cell, limit)
            with memory_guard(f"candidate {i}"):
                costs = study_costs(study, cell)
            row = [(flops_text if c.startswith("gflops") else count_text)(costs[c]) for c in columns] + [memory]
        except AblateError as err:
            row = [f"infeasible: {err}"] + [""] * len(columns)
        rows.append([str(i), ", ".join(f"{k}={v}" for k, v in cell.items()), *row])
    # Fitted like `ablate show`: costs in units, no header broken inside a word; a pipe gets every column.
    headers = {"params_m": "params", "gflops": "FLOPs", "params_m_paper": "params paper",
               "gflops_paper": "FLOPs paper", "gflops_ultralytics": "FLOPs ultralytics"}
    names = ["#", "settings", *columns, "memory >="]
    cols = [TextColumn(n, headers.get(n, n) if n in columns else n, tuple(r[j] for r in rows),
                       wrap=n == "settings" or (j == 2 and any(r[2].startswith("infeasible") for r in rows)),
                       justify="right" if n in columns or n == "#" else "left")
            for j, n in enumerate(names)]
    width = terminal_width()
    shown, hidden = fit(cols, width, ["#", "settings", *columns[:2], "memory >=", *columns[2:]])
    typer.echo(wrapped(f"{study.name}: {len(cells)} candidate(s), not trained ({where})", width))
    typer.echo(render(shown, width), nl=False)
    legend = "; ".join(f"{headers[c.name]} = {c.name}" for c in shown if c.name in headers) + \
        " (FLOPs: multiply-adds" + ("; FLOPs ultralytics: 2 per multiply-add" if "gflops_ultralytics" in columns
                                    else "") + ")" + \
        (f"; hidden to fit {width} columns: {', '.join(hidden)}" if hidden else "")
    console = Console(width=width or 200, highlight=False)
    console.print(legend)
    console.print(f"memory >=: a lower bound of one training step at the trial's batch size (weights, AdamW state, "
                  f"activations); this machine's largest memory: {format_bytes(limit[0])} ({limit[1]}).")


def _step_memory(study, cell, limit: tuple[int, str]) -> str:
    """The lower bound of one training step of ``cell``, flagged when it exceeds ``limit``."""
    from ablate.models.memory import check_memory, format_bytes
    from ablate.run.trial import candidate_arch

    estimate = check_memory(candidate_arch(study, cell), limit=limit)  # one image must fit, as validate checks
    need = estimate.train_bytes(study.train_for(cell).batch_size)
    return format_bytes(need) + (" (more than this machine)" if need > limit[0] else "")


def _dry_run_power(study, storage: Optional[str]) -> None:
    """How many seeds would resolve the paper's differences, at the noise the database measured."""
    from ablate.study import TRAINING_METRICS
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

