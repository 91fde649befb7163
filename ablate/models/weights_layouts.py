"""Key maps from released checkpoints' module names to ablate's, one table per family.

Each layout is an ordered list of ``(pattern, replacement)`` rules (first match wins; a key
no rule matches keeps its name) plus the derived buffers the official code stores and
ablate recomputes (dropped, never reported). The tables, read from the official model code
(the repositories named in :mod:`ablate.models.presets`; no code copied):

========================  ==========================================  =================================
layout                    official name                               ablate name
========================  ==========================================  =================================
``ablate``                (identity: ``model.state_dict()``)
``timm_swin``             ``layers.i.``                               ``stages.i.``
(timm 0.9+)               ``head.fc.``                                ``head.``
``swin``                  ``layers.i.blocks.``                        ``stages.i.blocks.``
(microsoft/Swin-          ``layers.i.downsample.``                    ``stages.{i+1}.downsample.``
Transformer; also         ``*.relative_position_index``,              dropped (recomputed)
FLatten-Swin)             ``*.attn_mask``
``focal``                 ``layers.i.blocks.j.pool_layers.``          ``stages.i.blocks.j.attn.pool_layers.``
(microsoft/Focal-         ``layers.i.blocks.``                        ``stages.i.blocks.``
Transformer)              ``layers.i.downsample.``                    ``stages.{i+1}.downsample.embed.``
                          ``*.relative_position_index*``,             dropped (recomputed)
                          ``*.valid_ind_rolled``, ``*.attn_mask``
``vit`` (DeiT, timm)      ``blocks.j.``                               ``stages.0.blocks.j.``
                          ``pos_embed``                               ``stages.0.pos_embed``
``pvt`` (whai362/PVT,     ``patch_embed1.``                           ``patch_embed.``
FLatten-PVT)              ``patch_embed{k}.`` (k > 1)                 ``stages.{k-1}.downsample.embed.``
                          ``pos_embed{k}``                            ``stages.{k-1}.pos_embed``
                          ``block{k}.j.``                             ``stages.{k-1}.blocks.j.``
                          ``.attn.sr.``                               ``.attn.reduce.``
                          ``norm.`` (FLatten-PVT: never read)         dropped when the model has none
``biformer``              ``downsample_layers.0.``                    ``patch_embed.layers.``
(rayleizhu/BiFormer)      ``downsample_layers.i.0.`` / ``.1.``        ``stages.i.downsample.conv.`` / ``.norm.``
                          ``stages.i.j.``                             ``stages.i.blocks.j.``
                          ``.attn.qkv.qkv.``                          ``.attn.qkv.``
                          ``.mlp.0.`` / ``.mlp.3.``                   ``.mlp.fc1.`` / ``.mlp.fc2.``
``biformer_stl``          ``downsample_layers.0.0.`` / ``.0.1.``      ``patch_embed.proj.`` / ``.norm.``
(BiFormer's               ``downsample_layers.i.0.`` / ``.i.1.``      ``stages.i.downsample.norm.`` / ``.conv.``
``biformer_stl.py``)      ``.attn.qkv.qkv.``                          ``.attn.qkv.``
                          ``.mlp.0.`` / ``.mlp.2.``                   ``.mlp.fc1.`` / ``.mlp.fc2.``
========================  ==========================================  =================================

After renaming, three adaptations follow the built model rather than the layout (so they
hold for any family that needs them): a packed ``X.qkv`` whose model has separate ``X.q``
and ``X.kv`` linears is split by rows (``[:C]`` -> ``q``, ``[C:]`` -> ``kv``; FLatten-Swin's
focused-linear blocks), separate ``X.q`` and ``X.kv`` are concatenated where the model packs
them into ``X.qkv`` (PVT's stage 4, no spatial reduction), and a DDP ``module.`` prefix is
removed first. Which table applies is not guessed from names: :func:`ablate.models.weights.map_state_dict`
tries each and keeps the one that lands the most tensors on the model with the right shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LAYOUTS", "Layout"]

Rule = tuple[str, "str | Callable[[re.Match[str]], str]"]


@dataclass(frozen=True)
class Layout:
    """One family's renaming table.

    Attributes:
        name: what reports print (``swin``, ``pvt``, ...).
        source: where the names come from, for the report.
        rules: ``(regex, replacement)`` pairs, the first matching one applied (``re.sub``,
            count 1, anchored at the start).
        drop: regexes of derived buffers the official model stores and ablate recomputes.
        unused: regexes (of ablate names) of tensors the official model holds but its
            forward never reads; dropped when the built model has no such tensor
            (FLatten-PVT's final ``norm``, commented out of its ``forward_features``).
    """

    name: str
    source: str
    rules: tuple[Rule, ...] = ()
    drop: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()

    def rename(self, key: str) -> str | None:
        """The ablate name of ``key``, or None for a derived buffer that is dropped."""
        if any(re.search(p, key) for p in self.drop):
            return None
        for pattern, repl in self.rules:
            new, n = re.subn("^" + pattern, repl, key, count=1)
            if n:
                return new
        return key


def _shift(prefix: str, offset: int, suffix: str) -> Callable[[re.Match[str]], str]:
    """A replacement that renumbers group 1 by ``offset``: ``layers.0.downsample`` -> ``stages.1...``."""
    return lambda m: f"{prefix}{int(m.group(1)) + offset}{suffix}"


_SWIN_DROP = (r"\.relative_position_index$", r"(^|\.)attn_mask$")

LAYOUTS: tuple[Layout, ...] = (
    Layout("ablate", "ablate's own model.state_dict()"),
    Layout("timm_swin", "timm's SwinTransformer (0.9+)",
           ((r"layers\.(\d+)\.", r"stages.\1."), (r"head\.fc\.", "head.")), _SWIN_DROP),
    Layout("swin", "microsoft/Swin-Transformer models/swin_transformer.py (FLatten-Swin's flatten_swin.py too)",
           ((r"layers\.(\d+)\.downsample\.", _shift("stages.", 1, ".downsample.")),
            (r"layers\.(\d+)\.blocks\.", r"stages.\1.blocks.")), _SWIN_DROP),
    Layout("focal", "microsoft/Focal-Transformer classification/focal_transformer.py",
           ((r"layers\.(\d+)\.blocks\.(\d+)\.pool_layers\.", r"stages.\1.blocks.\2.attn.pool_layers."),
            (r"layers\.(\d+)\.downsample\.", _shift("stages.", 1, ".downsample.embed.")),
            (r"layers\.(\d+)\.blocks\.", r"stages.\1.blocks.")),
           (r"\.relative_position_index(_\d+)?$", r"\.valid_ind_rolled$", r"\.valid_ind_unfold$",
            r"(^|\.)attn_mask$")),
    Layout("vit", "DeiT (facebookresearch/deit) and timm's VisionTransformer",
           ((r"blocks\.(\d+)\.", r"stages.0.blocks.\1."), (r"pos_embed$", "stages.0.pos_embed"))),
    Layout("pvt", "whai362/PVT classification/pvt.py (FLatten-PVT's flatten_pvt.py too)",
           ((r"patch_embed1\.", "patch_embed."),
            (r"patch_embed(\d+)\.", _shift("stages.", -1, ".downsample.embed.")),
            (r"pos_embed(\d+)$", _shift("stages.", -1, ".pos_embed")),
            (r"block(\d+)\.(\d+)\.attn\.sr\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.attn.reduce."),
            (r"block(\d+)\.", _shift("stages.", -1, ".blocks."))), (), (r"^norm\.(weight|bias)$",)),
    Layout("biformer", "rayleizhu/BiFormer models/biformer.py",
           ((r"downsample_layers\.0\.", "patch_embed.layers."),
            (r"downsample_layers\.(\d+)\.0\.", r"stages.\1.downsample.conv."),
            (r"downsample_layers\.(\d+)\.1\.", r"stages.\1.downsample.norm."),
            (r"stages\.(\d+)\.(\d+)\.attn\.qkv\.qkv\.", r"stages.\1.blocks.\2.attn.qkv."),
            (r"stages\.(\d+)\.(\d+)\.mlp\.0\.", r"stages.\1.blocks.\2.mlp.fc1."),
            (r"stages\.(\d+)\.(\d+)\.mlp\.3\.", r"stages.\1.blocks.\2.mlp.fc2."),
            (r"stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."))),
    Layout("biformer_stl", "rayleizhu/BiFormer models/biformer_stl.py",
           ((r"downsample_layers\.0\.0\.", "patch_embed.proj."),
            (r"downsample_layers\.0\.1\.", "patch_embed.norm."),
            (r"downsample_layers\.(\d+)\.0\.", r"stages.\1.downsample.norm."),
            (r"downsample_layers\.(\d+)\.1\.", r"stages.\1.downsample.conv."),
            (r"(stages\.\d+\.blocks\.\d+)\.attn\.qkv\.qkv\.", r"\1.attn.qkv."),
            (r"(stages\.\d+\.blocks\.\d+)\.mlp\.0\.", r"\1.mlp.fc1."),
            (r"(stages\.\d+\.blocks\.\d+)\.mlp\.2\.", r"\1.mlp.fc2."))),
)
