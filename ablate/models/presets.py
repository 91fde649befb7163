"""The papers' named models as arch dicts handed to one builder.

Each preset is a small function returning its arch dict (timm's habit:
``swin_tiny_patch4_window7_224`` -> ``_create_swin_transformer``); caller overrides
win: ``create_preset("focal_tiny", img_size=32, num_classes=10)`` (:mod:`ablate.models.vit`
builds; this module is data only, so the arch resolver can read it without a cycle). The same dicts
back the ``preset`` key of an arch (``{"preset": "focal_tiny", "depths": [2, 2, 2, 2]}``).

Sources, read from the official repositories (no code copied):

* Focal-T/S/B: https://github.com/microsoft/Focal-Transformer,
  ``configs/focal_{tiny,small,base}_patch4_window7_224.yaml`` over the defaults in
  ``config.py`` (``FOCAL_STAGES`` and ``EXPAND_STAGES`` all four stages,
  ``EXPAND_LAYER: all``, ``USE_SHIFT: False``, ``USE_CONV_EMBED: False``, ``QKV_BIAS``,
  ``MLP_RATIO: 4``), and ``classification/focal_transformer.py`` (conv patch embedding
  with stride 2 between stages). Printed figures: the README's ImageNet-1K table.
* Swin-T: https://github.com/microsoft/Swin-Transformer,
  ``configs/swin/swin_tiny_patch4_window7_224.yaml`` (window 7, shifted windows on odd
  blocks, ``PatchMerging``); figures from the Swin paper's Table 1 / the README.
* BiFormer-T/S/B and BiFormer-STL: https://github.com/rayleizhu/BiFormer,
  ``models/biformer.py`` and ``models/biformer_stl.py`` (the Swin-Tiny-layout model of
  the paper's ablations), attention from ``ops/bra_legacy.py`` and ``models/_common.py``;
  printed figures from the README's ImageNet-1K table.
* PVT-T: https://github.com/whai362/PVT ``classification/pvt.py`` (``pvt_tiny``);
  FLatten-PVT-T/S: https://github.com/LeapLabTHU/FLatten-Transformer
  ``models/flatten_pvt.py`` and ``cfgs/flatten_pvt_{t,s}.yaml`` over ``config.py``.

The presets: ``focal_{tiny,small,base}``, ``swin_tiny``, ``pvt_tiny``, ``deit_tiny``,
``flatten_swin_{tiny,small,base}``, ``flatten_pvt_{tiny,small}``, ``flatten_deit_tiny``,
``biformer_{tiny,small,base}``, ``biformer_stl``, ``lavit_swin_tiny``
(:func:`list_presets`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ablate.errors import ConfigError, unknown_name

__all__ = ["PRESET_INFO", "YOLO_PRESET_INFO", "list_presets", "preset_arch", "preset_task"]

# The officially printed numbers at 224x224 (params in millions, GFLOPs as
# multiply-adds). ``verified``: ``tests/models/test_models.py`` builds the preset and finds
# params within 1 % and FLOPs within 3 % of these (``truncated``: the paper cuts to one
# decimal, so the count must lie in [printed, printed + 0.1)). An unverified preset's
# figures are our own counts, kept as a regression check.
PRESET_INFO: dict[str, dict[str, Any]] = {
    "focal_tiny": dict(params_m=28.9, gflops=4.9, resolution=224, verified=True,
                       source="Focal Transformer (NeurIPS 2021), microsoft/Focal-Transformer README, Focal-T"),
    "focal_small": dict(params_m=51.1, gflops=9.4, resolution=224, verified=True,
                        source="Focal Transformer (NeurIPS 2021), microsoft/Focal-Transformer README, Focal-S"),
    "focal_base": dict(params_m=89.8, gflops=16.4, resolution=224, verified=True,
                       source="Focal Transformer (NeurIPS 2021), microsoft/Focal-Transformer README, Focal-B"),
    "flatten_swin_tiny": dict(params_m=29.0, gflops=4.5, resolution=224, verified=True,
                              source="FLatten Transformer (ICCV 2023), Table 2 / LeapLabTHU README, FLatten-Swin-T"),
    "flatten_swin_small": dict(params_m=51.0, gflops=8.7, resolution=224, verified=True,
                               source="FLatten Transformer (ICCV 2023), Table 2 / LeapLabTHU README, FLatten-Swin-S"),
    "flatten_swin_base": dict(params_m=89.0, gflops=15.4, resolution=224, verified=True,
                              source="FLatten Transformer (ICCV 2023), Table 2 / LeapLabTHU README, FLatten-Swin-B"),
    "flatten_pvt_tiny": dict(params_m=12.2, gflops=2.0, resolution=224, verified=True,
                             source="FLatten Transformer (ICCV 2023), Table 2 / LeapLabTHU README, FLatten-PVT-T"),
    "flatten_pvt_small": dict(params_m=21.7, gflops=4.0, resolution=224, verified=True,
                              source="FLatten Transformer (ICCV 2023), Table 2 / LeapLabTHU README, FLatten-PVT-S"),
    "flatten_deit_tiny": dict(params_m=6.1, gflops=1.1, resolution=224, verified=True,
                              truncated=True,
                              source="FLatten Transformer (ICCV 2023), Table 2, FLatten-DeiT-T "
                                     "(figures truncated to one decimal: the same table prints DeiT-T's "
                                     "1.26G as 1.2G)"),
    "biformer_tiny": dict(params_m=13.1, gflops=2.2, resolution=224, verified=True,
                          source="BiFormer (CVPR 2023), rayleizhu/BiFormer README, BiFormer-T"),
    "biformer_small": dict(params_m=25.5, gflops=4.5, resolution=224, verified=True,
                           source="BiFormer (CVPR 2023), rayleizhu/BiFormer README, BiFormer-S"),
    "biformer_base": dict(params_m=56.8, gflops=9.8, resolution=224, verified=True,
                          source="BiFormer (CVPR 2023), rayleizhu/BiFormer README, BiFormer-B"),
    "biformer_stl": dict(params_m=28.4, gflops=4.6, resolution=224, verified=True,
                         source="BiFormer (CVPR 2023), rayleizhu/BiFormer README, BiFormer-STL (Swin-Tiny "
                                "layout; the model of the paper's ablations: top-k, regions, ...)"),
    "lavit_swin_tiny": dict(params_m=26.43, gflops=9.10, resolution=224, verified=False,
                            source="ablate's LaViT (CVPR 2024) on Swin-T's layout; our own count, "
                                   "the paper's model table could not be established"),
    "pvt_tiny": dict(params_m=13.2, gflops=1.9, resolution=224, verified=True,
                     source="PVT (ICCV 2021), Table 2, PVT-Tiny; the baseline of FLatten-PVT"),
    "deit_tiny": dict(params_m=5.7, gflops=1.26, resolution=224, verified=True,
                      source="DeiT (ICML 2021), DeiT-Ti (1.3G printed; FLatten's Table prints 1.2G)"),
    "swin_tiny": dict(params_m=28.3, gflops=4.5, resolution=224, verified=True,
                      source="Swin Transformer (ICCV 2021), Table 1 and microsoft/Swin-Transformer README, Swin-T"),
}

# The one registry of named models: preset name -> (task, arch function), filled at import
# by decorator. ViT presets are ``classify``, YOLO presets ``detect``.
_PRESETS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {}


def _register(fn: Callable[[], dict[str, Any]], task: str = "classify") -> Callable[[], dict[str, Any]]:
    name = fn.__name__.removeprefix("_")
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is registered twice")
    _PRESETS[name] = (task, fn)
    return fn


def _detector(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    return _register(fn, "detect")


def _focal(embed_dim: int, depths: list[int], num_heads: int, drop_path_rate: float) -> dict[str, Any]:
    """What the three official Focal configs share (``config.py`` defaults + yaml)."""
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=4,
        embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=4.0,
        drop_rate=0.0, drop_path_rate=drop_path_rate, qkv_bias=True,
        attention="focal", downsample="conv", use_conv_embed=False,
        window_size=7, focal_level=2, focal_window=[7, 5, 3, 1], expand_size=3, pool_method="fc", shift_size=0,
    )


def _pvt(depths: list[int]) -> dict[str, Any]:
    """PVT v1's skeleton (``classification/pvt.py``; FLatten's ``flatten_pvt.py`` keeps it).

    Conv patch embedding (stride 4, then 2x2 stride-2 convs) each with LayerNorm (eps
    1e-5), a learned position table per stage, pre-norm blocks with LayerNorm eps 1e-6.
    The heads differ (see the presets): PVT v1 has a class token, FLatten-PVT mean-pools.
    """
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=4,
        dims=[64, 128, 320, 512], depths=depths, num_heads=[1, 2, 5, 8], mlp_ratio=[8.0, 8.0, 4.0, 4.0],
        drop_rate=0.0, drop_path_rate=0.1, qkv_bias=True, norm_eps=1e-6,
        downsample="conv", use_conv_embed=False, pos_embed="absolute",
    )


def _deit() -> dict[str, Any]:
    """DeiT-T's isotropic skeleton (``deit_tiny_patch16_224``): one stage, patch 16, class token."""
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=16,
        dims=[192], depths=[12], num_heads=[3], mlp_ratio=4.0,
        drop_rate=0.0, drop_path_rate=0.1, qkv_bias=True, norm_eps=1e-6,
        patch_norm=False, class_token=True, pos_embed="absolute",
    )


@_register
def _focal_tiny() -> dict[str, Any]:
    return _focal(96, [2, 2, 6, 2], 3, 0.2)


@_register
def _focal_small() -> dict[str, Any]:
    return _focal(96, [2, 2, 18, 2], 3, 0.3)


@_register
def _focal_base() -> dict[str, Any]:
    return _focal(128, [2, 2, 18, 2], 4, 0.5)


@_register
def _swin_tiny() -> dict[str, Any]:
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=4,
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=3, mlp_ratio=4.0,
        drop_rate=0.0, drop_path_rate=0.2, qkv_bias=True,
        attention="softmax", downsample="merge", use_conv_embed=False,
        window_size=7, shift_size=3, rel_pos_bias=True,
    )


@_register
def _pvt_tiny() -> dict[str, Any]:
    """PVT-T (``pvt_tiny``): spatial reduction 8/4/2/1; a class token joins stage 4 (its
    position table has 1 + 7x7 rows), the final LayerNorm (eps 1e-6) normalises every
    token and the head reads the class token (``forward_features``: ``norm(x)[:, 0]``)."""
    return dict(_pvt([2, 2, 2, 2]), attention="softmax", sr_ratio=[8, 4, 2, 1], rel_pos_bias=False,
                class_token=True)


@_register
def _deit_tiny() -> dict[str, Any]:
    return dict(_deit(), attention="softmax", rel_pos_bias=False)


def _flatten_swin(embed_dim: int, depths: list[int], num_heads: int, drop_path_rate: float) -> dict[str, Any]:
    """FLatten-Swin (``models/flatten_swin.py``, ``cfgs/flatten_swin_*.yaml``): ``LLSS``.

    The configs set ``WINDOW_SIZE: 56`` for the focused-linear (L) stages, which the
    Swin block clamps to the whole map (global attention at 56x56 and 28x28), and the
    softmax (S) stages use Swin's window 7 with shifts on odd blocks.
    """
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=4,
        embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=4.0,
        drop_rate=0.0, drop_path_rate=drop_path_rate, qkv_bias=True,
        downsample="merge", use_conv_embed=False,
        attention=["flatten", "flatten", "softmax", "softmax"],
        window_size=[56, 56, 7, 7], shift_size=[0, 0, 3, 3], rel_pos_bias=[None, None, True, True],
        focusing_factor=3.0, kernel_size=5,
    )


@_register
def _flatten_swin_tiny() -> dict[str, Any]:
    return _flatten_swin(96, [2, 2, 6, 2], 3, 0.2)


@_register
def _flatten_swin_small() -> dict[str, Any]:
    return _flatten_swin(96, [2, 2, 18, 2], 3, 0.3)


@_register
def _flatten_swin_base() -> dict[str, Any]:
    return _flatten_swin(128, [2, 2, 18, 2], 4, 0.5)


def _flatten_pvt(depths: list[int]) -> dict[str, Any]:
    """FLatten-PVT: ``LLLL`` with ``PVT_LA_SR_RATIOS: 1111`` (no spatial reduction), focusing
    factor 3, kernel 5. Its ``forward_features`` drops PVT's class token and comments out the
    final norm: the head reads the mean of the last stage's raw tokens (``final_norm: none``).
    The official model still holds that unused ``LayerNorm(512)``: its parameter count
    (12,150,504 for T) includes 1,024 weights that never touch the output; ours does not.
    """
    return dict(_pvt(depths), attention="flatten", sr_ratio=1, focusing_factor=3.0, kernel_size=5,
                final_norm="none")


@_register
def _flatten_pvt_tiny() -> dict[str, Any]:
    return _flatten_pvt([2, 2, 2, 2])


@_register
def _flatten_pvt_small() -> dict[str, Any]:
    return _flatten_pvt([3, 4, 6, 3])


@_register
def _flatten_deit_tiny() -> dict[str, Any]:
    """FLatten-DeiT-T: DeiT-T with focused linear attention (kernel 5, key position table)."""
    return dict(_deit(), attention="flatten", focusing_factor=3.0, kernel_size=5)


def _biformer(dims: list[int], depths: list[int], routing_heads: list[int], drop_path_rate: float) -> dict[str, Any]:
    """BiFormer (``models/biformer.py``): conv stem, conv+BN downsampling, 3x3 depthwise
    position embedding before every attention, LayerNorm eps 1e-6, MLP ratio 3, final
    BatchNorm; ``n_win`` 7, top-k 1/4/16 and full attention with LePE in stage 4.

    Routing stages have ``dim // 32`` heads; the last stage's ``AttentionLePE(dim)`` keeps
    its constructor default of 8 heads in every variant, so the preset passes 8.
    """
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=4,
        dims=dims, depths=depths, num_heads=routing_heads + [8], mlp_ratio=3.0,
        drop_rate=0.0, drop_path_rate=drop_path_rate, norm_eps=1e-6,
        stem="convs", downsample="conv_bn", pos_conv=3, final_norm="batch",
        attention="biformer", n_win=7, topk=[1, 4, 16, -2], side_dwconv=5, kv_downsample_mode="identity",
    )


@_register
def _biformer_tiny() -> dict[str, Any]:
    return _biformer([64, 128, 256, 512], [2, 2, 8, 2], [2, 4, 8], 0.1)


@_register
def _biformer_small() -> dict[str, Any]:
    return _biformer([64, 128, 256, 512], [4, 4, 18, 4], [2, 4, 8], 0.15)


@_register
def _biformer_base() -> dict[str, Any]:
    return _biformer([96, 192, 384, 768], [4, 4, 18, 4], [3, 6, 12], 0.4)


@_register
def _biformer_stl() -> dict[str, Any]:
    """BiFormer-STL (``models/biformer_stl.py``, ``biformer_stl``): Swin-T's layout (dims
    96-768, depths 2-2-6-2, MLP ratio 4, ``dim // 32`` heads) with bi-level routing
    attention, the model of the paper's ablation studies.

    Unlike BiFormer-T/S/B: a ``Conv2d(3, 96, 4, stride 4)`` + BatchNorm stem, BatchNorm
    *before* a 2x2 stride-2 conv between stages, no depthwise position conv before
    attention. Blocks are LayerNorm(eps 1e-6) -> attention -> residual, LayerNorm -> MLP ->
    residual; final BatchNorm, mean pool, Linear head. ``n_win`` 7 in every stage, top-k
    1/4/16 and full attention with LePE (kernel 5) in stage 4, whose ``AttentionLePE(dim)``
    keeps its default 8 heads (not 24). Drop path 0.1 (``scripts/train.sh``).
    """
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=4,
        dims=[96, 192, 384, 768], depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 8], mlp_ratio=4.0,
        drop_rate=0.0, drop_path_rate=0.1, norm_eps=1e-6,
        stem="patch_bn", downsample="bn_conv", pos_conv=0, final_norm="batch",
        attention="biformer", n_win=7, topk=[1, 4, 16, -2], side_dwconv=5, kv_downsample_mode="identity",
    )


@_register
def _lavit_swin_tiny() -> dict[str, Any]:
    """A LaViT on Swin-T's layout (not the paper's models: their table could not be
    established, see ``ablate/attention/lavit.py``). Global attention in every stage;
    stages 1-2 are all VA layers (an LA layer's N x N maps would hold 2 x 3136^2 weights
    at 56x56), stage 3 has 3 VA + 3 LA layers, stage 4 1 VA + 1 LA layer.
    """
    return dict(
        img_size=224, in_chans=3, num_classes=1000, patch_size=4,
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=3, mlp_ratio=4.0,
        drop_rate=0.0, drop_path_rate=0.2, qkv_bias=True, downsample="merge",
        attention="lavit", va_layers=[2, 2, 3, 1], attention_residual=True, dp_loss_weight=1.0,
    )


# ---------------------------------------------------------------------------- YOLO presets
# Arch dicts of ablate.models.yolo (YOLO_ARCH_DEFAULTS' keys); building them imports ultralytics.


@_detector
def _yolov8n() -> dict[str, Any]:
    return {"base": "yolov8n"}


@_detector
def _yolov8s() -> dict[str, Any]:
    return {"base": "yolov8s"}


@_detector
def _yolo11n() -> dict[str, Any]:
    return {"base": "yolo11n"}


@_detector
def _yolo11s() -> dict[str, Any]:
    return {"base": "yolo11s"}


@_detector
def _yolov8n_fla() -> dict[str, Any]:
    """The seed's yolov8n: focused linear attention (8 heads at 256 channels, focusing
    factor 3, 5x5 DWC, no positional encoding) right after SPPF."""
    return {"base": "yolov8n", "attention": "flatten", "placement": "sppf", "places": 1, "head_dim": 32,
            "focusing_factor": 3.0, "kernel_size": 5, "pos_encoding": False}


# Figures at 640x640. ``params`` and ``gflops_ultralytics`` for the stock models are what
# this ultralytics (8.4) prints (``YOLO("yolov8n.yaml").info()``); ``tests/models/test_yolo.py``
# checks our count equals ``ultralytics.utils.torch_utils.get_flops`` exactly.
# ``gflops`` is multiply-adds (ablate's convention). yolov8n_fla: our own count; the
# seed's blog reports 8.9 -> 9.1 GFLOPs (ultralytics' convention) for the same change.
YOLO_PRESET_INFO: dict[str, dict[str, Any]] = {
    "yolov8n": dict(params_m=3.1572, gflops=4.372, gflops_ultralytics=8.9, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/v8/yolov8.yaml, scale n (3,157,200 params, 8.9 GFLOPs)"),
    "yolov8s": dict(params_m=11.1666, gflops=14.301, gflops_ultralytics=28.8, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/v8/yolov8.yaml, scale s (11,166,560 params, 28.8 GFLOPs)"),
    "yolo11n": dict(params_m=2.6241, gflops=3.271, gflops_ultralytics=6.7, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/11/yolo11.yaml, scale n (2,624,080 params, 6.7 GFLOPs; "
                           "the YAML comment's 6.6 is an older count)"),
    "yolo11s": dict(params_m=9.4588, gflops=10.795, gflops_ultralytics=21.8, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/11/yolo11.yaml, scale s (9,458,752 params, 21.8 GFLOPs; "
                           "the YAML comment's 21.7 is an older count)"),
    "yolov8n_fla": dict(params_m=3.4220, gflops=4.486, gflops_ultralytics=9.1, resolution=640, verified=False,
                        source="yolov8n + focused linear attention after SPPF (the seed's blog: 8.9 -> 9.1 "
                               "GFLOPs); our own count"),
}


def list_presets(task: str | None = "classify") -> list[str]:
    """Names of the presets of ``task`` (``None``: every task), sorted."""
    return sorted(n for n, (t, _) in _PRESETS.items() if task is None or t == task)


def preset_task(name: str) -> str:
    """The task a preset is for (``classify`` or ``detect``).

    Raises:
        ConfigError: unknown name, listing every preset with a did-you-mean.
    """
    try:
        return _PRESETS[name][0]
    except (KeyError, TypeError):
        raise ConfigError(unknown_name("preset", name, list_presets(None))) from None


def preset_arch(name: str, task: str | None = "classify") -> dict[str, Any]:
    """A fresh copy of a preset's arch dict (not resolved; see ``resolve_architecture``).

    Args:
        name: a name from :func:`list_presets`.
        task: the task the caller builds (``None``: any); a preset of another task is
            refused, naming its task.

    Raises:
        ConfigError: unknown name (or one of another task), listing the task's presets
            with a did-you-mean.
    """
    entry = _PRESETS.get(name) if isinstance(name, str) else None
    what = "YOLO preset" if task == "detect" else "preset"
    if entry is None or (task is not None and entry[0] != task):
        other = f" ({name!r} is a {entry[0]} preset)" if entry is not None else ""
        raise ConfigError(unknown_name(what, name, list_presets(task)) + other)
    return entry[1]()
