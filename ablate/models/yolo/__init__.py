"""Ultralytics YOLO with any registered attention family, without a fork of ultralytics.

Importing this module registers, for every attention family ``F`` in
:func:`ablate.attention.list_attention`, three layers under the names ultralytics' model
YAML uses (set as attributes of ``ultralytics.nn.tasks``, where ``parse_model`` looks
module names up):

* ``AttnBlock_F`` — a standalone, channel-preserving attention block for any place in
  a model, e.g. right after SPPF (YAML args ``[c2, cfg]``);
* ``C2f_F`` — YOLOv8's C2f with an attention block after each of its bottlenecks
  (YAML args ``[c2, cfg, shortcut, g, e]``: a stock C2f row with ``cfg`` inserted
  after the channel count);
* ``C3k2_F`` — the same for YOLO11's C3k2 (args ``[c2, cfg, c3k, e, attn, g,
  shortcut]``; ``attn`` must stay false, the attention is ours).

``cfg`` is a mapping: ``head_dim`` (channels per head, default 32; a block with ``C``
channels gets ``max(1, C // head_dim)`` heads), ``input_resolution`` (the map the
block sees at the training size, ``[H, W]``, or null; window clamps and position
tables depend on it, as in :mod:`ablate.models.vit`) and any option of family ``F``
(family defaults for the rest). Example, the focused linear attention of the seed
after yolov8n's SPPF, at 640 px::

    - [-1, 1, AttnBlock_flatten, [1024, {head_dim: 32, input_resolution: [20, 20], pos_encoding: false}]]

The block
---------
Every attention site is the same pre-norm residual unit, :class:`AttnResidual`::

    y = x + Mixer2d(mixer)(LayerNorm2d(x))        # (B, C, H, W) -> (B, C, H, W)

— the attention half of a transformer block (the layout of our ViT's blocks and of
ultralytics' own ``PSABlock``), without the MLP, so that a site adds attention and
nothing else. ``AttnBlock_F`` stacks ``n`` of them; ``C2f_F``/``C3k2_F`` put one after
each bottleneck (``nn.Sequential(Bottleneck, AttnResidual)``, the layout of
ultralytics' ``C3k2(attn=True)``, which follows each bottleneck with a ``PSABlock``).
Linear and LayerNorm weights get the official ViT init (truncated normal, std 0.02).

Compared with the seed (a blog's YOLOv8 + FocusedLinearAttention): its standalone block
is ``x -> FLA(x)`` without norm or residual, so at initialisation SPPF's features reach
the head only through a random projection; here the identity path keeps the pretrained
or stock behaviour available and the attention learns a correction. Its
``Bottleneck_FLA`` returns ``x + cv2(cv1(x))`` when the shortcut is on — the attention
it builds is then never called (every backbone C2f has the shortcut on) — and
``FLA(cv2(cv1(x)))`` otherwise; here the attention always runs, after the bottleneck.
Its positional encoding is a fresh zero tensor in every call (no encoding at all), so
the preset ``yolov8n_fla`` sets ``pos_encoding: false``; with 8 heads of 32 channels
(``head_dim`` 32 at 256 channels, the seed's ``num_heads=8``), focusing factor 3 and a
5x5 DWC it has the seed's parameters plus one LayerNorm (512).

Any H×W runs: ultralytics probes every model at 256×256 while building, trains with
other sizes and validates non-square (rect) batches; window and region families pad.
A stateful family (LaViT) gets a fresh state per call from :class:`Mixer2d`: a lone
VA layer.

The modules: :mod:`~ablate.models.yolo.blocks` (the layers and their registration),
:mod:`~ablate.models.yolo.arch` (the arch dict, presets, sites, building),
:mod:`~ablate.models.yolo.export` (the YAML), and ``upstream`` (the one import of ultralytics,
offline). Costs: :func:`ablate.measure.ultralytics_gflops`, :func:`ablate.measure.profile_yolo`.

The arch dict
-------------
A detection trial's candidate (stored as ``user_attrs["arch"]``); keys and defaults in
:data:`YOLO_ARCH_DEFAULTS`:

* ``base``: ``yolov8{n,s,m,l,x}`` or ``yolo11{n,s,m,l,x}``, ultralytics' own YAMLs
  (``cfg/models/v8/yolov8.yaml``, ``cfg/models/11/yolo11.yaml``) at that scale; also
  ``yolov5{n,...}`` (C3 blocks: only the ``sppf`` placement exists there);
* ``attention``: a family name or ``"none"`` (the stock model);
* ``placement``: ``"sppf"`` (one ``AttnBlock_F`` right after SPPF: every consumer of
  SPPF reads the block, every later ``from`` index moves by one), ``"neck"`` (the
  C2f/C3k2 rows feeding Detect, at P3/P4/P5, become ``C2f_F``/``C3k2_F``) or
  ``"backbone"`` (the backbone's C2f/C3k2 rows, P2 to P5);
* ``places``: how many of the placement's sites, deepest (largest stride) first;
  ``None`` = all of them;
* ``head_dim``: channels per attention head;
* ``nc``: number of classes; ``img_size``: the training size (a multiple of 32), which
  fixes each block's ``input_resolution``;
* ``preset``: start from a named preset (:func:`list_yolo_presets`), other keys override;
* any option of the family, at top level.
"""

from __future__ import annotations

import typing
from typing import Any

from ablate.attention import list_attention
from ablate.models.yolo.arch import (
    YOLO_ARCH_DEFAULTS,
    YOLO_BASES,
    YOLO_PLACEMENTS,
    YOLO_PRESET_INFO,
    Site,
    build_yolo,
    check_yolo_arch,
    create_yolo_preset,
    list_yolo_presets,
    resolve_yolo_arch,
    yolo_model_dict,
    yolo_preset_arch,
    yolo_sites,
)
from ablate.models.yolo.blocks import (
    KINDS,
    AttnBlock,
    AttnResidual,
    C2fAttention,
    C3k2Attention,
    LayerNorm2d,
    attention_heads,
    register_ultralytics,
)
from ablate.models.yolo.export import export_yolo_yaml, yolo_yaml_text

__all__ = ["YOLO_ARCH_DEFAULTS", "YOLO_BASES", "YOLO_PLACEMENTS", "YOLO_PRESET_INFO", "AttnBlock", "Site",
           "AttnResidual", "C2fAttention", "C3k2Attention", "LayerNorm2d", "build_yolo", "check_yolo_arch",
           "create_yolo_preset", "export_yolo_yaml", "list_yolo_presets", "register_ultralytics", "resolve_yolo_arch",
           "attention_heads", "yolo_model_dict", "yolo_preset_arch", "yolo_sites", "yolo_yaml_text"]


def __getattr__(name: str) -> Any:
    """Layers of families registered after this package was imported (unpickling a checkpoint)."""
    prefix, _, family = name.partition("_")
    if prefix in KINDS and family in list_attention():
        register_ultralytics()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_ultralytics()  # what importing this package is for: YOLO("file.yaml") finds the layers

if typing.TYPE_CHECKING:  # pragma: no cover - names created by register_ultralytics()
    AttnBlock_flatten: type[AttnBlock]
    C2f_flatten: type[C2fAttention]
    C3k2_flatten: type[C3k2Attention]
