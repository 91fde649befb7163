"""A YOLO candidate as an ultralytics model YAML that ``YOLO(file)`` builds (after
``import ablate.models.yolo``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ablate.models.yolo.upstream import tasks
from ablate.errors import ConfigError
from ablate.models.yolo.arch import YOLO_BASES, resolve_yolo_arch, yolo_model_dict

__all__ = ["yolo_yaml_text", "export_yolo_yaml"]


def _yaml_scalar(value: Any) -> str:
    """One scalar in a form PyYAML (YAML 1.1, ultralytics' loader) reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text:  # YAML 1.1 floats need a dot and a signed exponent: 1e-05 -> 1.0e-05
            mantissa, exp = text.split("e")
            mantissa = mantissa if "." in mantissa else mantissa + ".0"
            exp = exp if exp[0] in "+-" else "+" + exp
            text = f"{mantissa}e{exp}"
        return text
    if isinstance(value, str):
        return json.dumps(value)
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to a model YAML")

def _yaml_flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_flow(v) for v in value) + "]"
    return _yaml_scalar(value)

def _yaml_row(row: Sequence[Any]) -> str:
    f, n, m, args = row
    return f"  - [{_yaml_flow(f)}, {n}, {m}, {_yaml_flow(args)}]"

def yolo_yaml_text(arch: Mapping[str, Any]) -> str:
    """The model YAML of a YOLO arch, in ultralytics' own layout, with the arch as a comment."""
    r = resolve_yolo_arch(arch)
    d = yolo_model_dict(r)
    lines = [
        f"# ablate candidate: {r['base']} with attention {r['attention']!r}"
        + (f" ({r['placement']}, {r['places']} site(s))" if r["attention"] != "none" else ""),
        f"# arch: {json.dumps(r, sort_keys=False)}",
        "# Build: import ablate.models.yolo (it registers AttnBlock_*/C2f_*/C3k2_* with ultralytics), then",
        "#   from ultralytics import YOLO; YOLO(\"this file\")",
        "# ultralytics reads the scale from the file name (yolov8n-..., yolo11s-...); a name without one",
        f"# builds the first scale listed below, {d['scale']!r}, the candidate's.",
        "",
        f"nc: {d['nc']}",
        f"scale: {d['scale']}",
        "scales: # [depth, width, max_channels]",
        *(f"  {k}: {_yaml_flow(v)}" for k, v in d["scales"].items()),
    ]
    for key, value in d.items():
        if key not in ("nc", "scale", "scales", "backbone", "head"):
            lines.append(f"{key}: {_yaml_flow(value)}")
    lines += ["", "backbone:", *(_yaml_row(row) for row in d["backbone"]),
              "", "head:", *(_yaml_row(row) for row in d["head"]), ""]
    return "\n".join(lines)

def export_yolo_yaml(arch: Mapping[str, Any], path: str | Path) -> Path:
    """Write a YOLO arch as an ultralytics model YAML that ``YOLO(path)`` builds.

    The scale stays inside the file: its ``scales`` list the candidate's first, which
    ultralytics uses when the file name names no scale; a name that does
    (``yolov8s-x.yaml``) must name the candidate's, or this raises (ultralytics would
    build another model).

    Returns:
        The path written.

    Raises:
        ConfigError: a bad arch, or a file name that makes ultralytics pick another scale.
        Infeasible: an arch that cannot be built.
    """
    r = resolve_yolo_arch(arch)
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{path}: a model YAML must end in .yaml or .yml")
    scale = YOLO_BASES[r["base"]][1]
    guessed = tasks.guess_model_scale(path)
    if guessed and guessed != scale:
        raise ConfigError(f"{path}: ultralytics reads scale {guessed!r} from this file name, but the candidate is "
                          f"{r['base']} (scale {scale!r}); name it e.g. {r['base']}-{r['attention']}.yaml")
    text = yolo_yaml_text(r)
    from ablate.atomic import write_atomic

    return write_atomic(path, text)  # whole or not at all: a full disk leaves no cut-off model YAML
