"""`ablate profile`: params and FLOPs of a preset or of every grid cell of a study."""

from __future__ import annotations

from typing import Optional

import typer

from ablate.cli.common import ProfileFormat, app, echo_json
from ablate.errors import ConfigError


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
            echo_json(rows)
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
        echo_json(rows[0] if len(rows) == 1 else rows)
    else:
        for r in rows:
            extra = (f"  {r['gflops_ultralytics']:>7.2f} GFLOPs as ultralytics prints (640 px)"
                     if "gflops_ultralytics" in r else "")
            typer.echo(f"{r['name']:<40} {r['resolution']:>4}px  {r['params_m']:>9.3f}M params  "
                       f"{r['gflops']:>9.4f} GFLOPs (multiply-adds){extra}")


def _preset_list() -> list[dict]:
    """Every preset (ViT, then YOLO) with its published figures."""
    from ablate.models.presets import PRESET_INFO, YOLO_PRESET_INFO, list_presets

    return ([{"name": n, **PRESET_INFO.get(n, {})} for n in list_presets("classify")]
            + [{"name": n, **YOLO_PRESET_INFO.get(n, {})} for n in list_presets("detect")])


def _yolo_size(resolution: Optional[int], default: int) -> int:
    size = resolution or default
    if size % 32:
        raise ConfigError(f"--resolution must be a multiple of 32 for a YOLO model (its largest stride), got {size}")
    return size


def _profile_rows(target: str, resolution: Optional[int]) -> list[dict]:
    from ablate.measure import profile as measure
    from ablate.models import build_model, preset_arch, resolve_architecture
    from ablate.models.memory import check_memory, memory_guard

    if target.endswith((".yaml", ".yml")):
        from ablate.run.candidate import Candidate, data_classes
        from ablate.study import load_study

        study = load_study(target)
        cells = study.cells() if study.is_grid else [{}]
        classes = data_classes(study)
        rows = []
        for cell in cells:
            arch = Candidate.of(study, cell, classes=classes).arch
            label = study.name + ("[" + ", ".join(f"{k}={v}" for k, v in cell.items()) + "]" if cell else "")
            if arch.task == "detect":
                from ablate.measure import profile_yolo

                size = _yolo_size(resolution, arch.img_size)
                rows.append({"name": label, "resolution": size, **profile_yolo(arch, size)})
                continue
            size = resolution or arch.img_size
            sized = arch if size == arch.img_size else resolve_architecture({**arch.to_dict(), "img_size": size})
            check_memory(sized, train=False)  # before anything is allocated
            with memory_guard(f"{label} at {size}x{size}"):
                rows.append({"name": label, "resolution": size, **measure(build_model(sized), size)})
        return rows
    from ablate.models import preset_task

    if preset_task(target) == "detect":  # unknown -> every preset listed, with a did-you-mean
        from ablate.measure import profile_yolo

        size = _yolo_size(resolution, 640)
        return [{"name": target, "resolution": size, **profile_yolo({"preset": target}, size)}]
    size = resolution or int(preset_arch(target).get("img_size", 224))
    arch = resolve_architecture({"preset": target, "img_size": size})
    check_memory(arch, train=False)  # before anything is allocated
    with memory_guard(f"{target} at {size}x{size}"):
        return [{"name": target, "resolution": size, **measure(build_model(arch), size)}]
