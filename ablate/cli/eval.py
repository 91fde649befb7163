"""`ablate eval`: a checkpoint's top-1/top-5 on an ImageFolder validation split, with n and
a 95 % interval, so a user can confirm that released weights reproduce their paper's number."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ablate.cli.common import ProfileFormat, app, echo_json
from ablate.errors import ConfigError, shown_path


@app.command(name="eval")
def eval_command(
    preset: str = typer.Argument(..., help="A classification preset (see `ablate profile --list`)."),
    weights: Path = typer.Option(..., "--weights", help="Checkpoint file: ablate's, timm's, an official release's "
                                                        "({'model': ...}), or safetensors. Never downloaded."),
    data: Path = typer.Option(..., "--data", help="Validation folder: one holding val/, or the class folders "
                                                  "themselves (imagenet/val)."),
    fmt: ProfileFormat = typer.Option(ProfileFormat.table, "--format", help="Output format."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=65536, help="Images per forward pass."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, max=256,
                                          help="Data-loading processes (default: 0 on the CPU, cores - 1 on CUDA)."),
    recipe: str = typer.Option("deit", "--recipe", help="Evaluation transform: deit (resize to size/0.875, "
                                                        "bicubic, centre crop: the releases') or proxy."),
    crop_pct: Optional[float] = typer.Option(None, "--crop-pct", help="Centre crop's share of the resized side "
                                                                     "(default: the recipe's, 0.875 for deit; 1.0 "
                                                                     "for Swin's 384 px fine-tunes)."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="The head's class names in output order, one "
                                                                   "per line (LOC_synset_mapping.txt works): scores "
                                                                   "a folder holding a subset of them."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", min=1, max=1_000_000,
                                              help="The checkpoint's class count, when it differs from the "
                                                   "preset's (a fine-tuned checkpoint)."),
    arch: list[str] = typer.Option([], "--arch", help="Preset key override KEY=VALUE (repeatable), e.g. "
                                                      "--arch img_size=384."),
    strict: bool = typer.Option(True, "--strict/--no-strict", help="Refuse a checkpoint whose keys do not all "
                                                                   "map (see `ablate weights check`)."),
) -> None:
    """Top-1 and top-5 accuracy of PRESET loaded from --weights on the ImageFolder at --data.

    Class folder i (sorted) is output i, as in the releases' ImageNet training; the evaluation transform is the recipe's (deit: resize to image_size/0.875, centre crop, ImageNet mean and std). Prints n and the 95 % Wilson interval of top-1.
    """  # noqa: E501 - one line per paragraph: Typer keeps a docstring's line breaks in --help
    from ablate.train.evaluate import evaluate_checkpoint, read_class_names

    overrides = _arch_overrides(arch)
    if num_classes is not None:
        if "num_classes" in overrides and overrides["num_classes"] != num_classes:
            raise ConfigError(f"--num-classes {num_classes} and --arch num_classes={overrides['num_classes']} "
                              f"disagree, allowed: one of them")
        overrides["num_classes"] = num_classes
    names = read_class_names(classes) if classes is not None else None
    progress = _progress_printer()
    try:
        result = evaluate_checkpoint(preset, weights, data, recipe=recipe, crop_pct=crop_pct, device=device,
                                     batch_size=batch_size,
                                     num_workers=workers, class_names=names, strict=strict, overrides=overrides,
                                     progress=progress)
    except KeyboardInterrupt:  # Ctrl-C mid-way: `error: interrupted`, exit 130, not a traceback
        raise typer.Abort() from None
    finally:
        progress.close()
    if fmt == ProfileFormat.json:
        echo_json(result.to_json())
        return
    low, high = result.top1_ci95
    k = "top-5" if result.num_classes >= 5 else f"top-{result.num_classes}"
    typer.echo(f"{result.preset} from {result.weights}")
    typer.echo(f"data    {result.data}: {result.layout}")
    classes = (f"{result.num_classes} classes" if result.class_folders == result.num_classes else
               f"{result.class_folders} class folders scored among {result.num_classes} outputs")
    typer.echo(f"        {result.images} images, {classes}, {result.image_size} px, "
               f"{result.recipe} evaluation transform"
               f"{'' if result.crop_pct is None else f' (crop {result.crop_pct:g})'}, {result.device}, {result.wall_s:.1f} s")
    typer.echo(f"top-1   {result.top1:6.2f} %   95 % CI {low:.2f}-{high:.2f} (Wilson, n={result.images}, "
               f"{result.correct1} right)")
    typer.echo(f"{k:<7} {result.top5:6.2f} %   ({result.correct5} right)")


def _arch_overrides(items: list[str]) -> dict[str, Any]:
    """``--arch KEY=VALUE`` as arch keys, values read as YAML scalars or flow lists."""
    from ablate.study.overrides import parse_overrides

    for item in items:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ConfigError(f"--arch {shown_path(item)}: not KEY=VALUE with a preset key, allowed: e.g. "
                              f"--arch img_size=384 or --arch num_classes=10 (an unknown key is answered with the allowed ones)")
    out: dict[str, Any] = {}
    for o in parse_overrides(items, "--arch"):
        if len(o.path) != 1 or not isinstance(o.path[0], str):
            raise ConfigError(f"--arch {o.text}: a preset key is one name (img_size, num_classes, ...), "
                              f"allowed: KEY=VALUE")
        out[o.path[0]] = o.value
    return out


class _ProgressPrinter:
    """Progress on stderr: a line rewritten in place on a terminal (twice a second at most),
    elsewhere one ``progress:`` line per ``ABLATE_PROGRESS_INTERVAL`` seconds (default 30)."""

    def __init__(self) -> None:
        from ablate.run.progress import progress_interval

        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else progress_interval()
        self.start = self.last = time.perf_counter()
        self.open_line = False  # a terminal line is shown and not yet ended

    def __call__(self, done: int, total: int) -> None:
        from ablate.run.progress import format_duration

        now = time.perf_counter()
        final = done >= total
        if self.every <= 0 or (now - self.last < self.every and not (self.tty and final and self.open_line)):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = format_duration((total - done) / rate) if rate > 0 else "?"
        line = f"progress: {done}/{total} images, {format_duration(now - self.start)} elapsed, ETA {eta}"
        if self.tty:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
            self.open_line = True
            if final:
                self.close()
        else:
            typer.echo(line, err=True)

    def close(self) -> None:
        """End a terminal line left open (finished, failed or interrupted), so the next line starts clean."""
        if self.open_line:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open_line = False


def _progress_printer() -> _ProgressPrinter:
    return _ProgressPrinter()
