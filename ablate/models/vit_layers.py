"""The layers a :class:`~ablate.models.vit.HierarchicalViT` is assembled from, below its blocks.

Stems (the conv patch embedding, BiFormer's two-conv stem), the downsampling layers
between stages (Focal's conv, Swin's ``PatchMerging``, BiFormer's conv+BN and BN+conv;
:mod:`ablate.models.vit` says which paper uses which), stochastic depth and the MLP.
Each maps tokens ``(B, N, C)`` of an ``hw`` map; the shapes are in the comments.
"""

from __future__ import annotations

import torch
from torch import nn

from ablate.models.vit_arch import embed_geometry

__all__ = ["BNConvDownsample", "ConvBNDownsample", "ConvDownsample", "ConvStem", "DropPath", "Mlp", "PatchEmbed",
           "PatchMerging"]


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (training only).

    The kept samples are scaled by ``1 / (1 - p)``. The scale is folded into the ``(B, 1, ...)``
    mask before it meets the branch (timm's ``drop_path``), so the full-size tensor sees one
    multiply instead of a multiply and a divide; :meth:`residual` also folds the residual add
    into that multiply (one ``addcmul``). Both equal ``x * mask / (1 - p)`` up to rounding.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def _scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """The per-sample factor ``(B, 1, ...)``: 0 or ``1 / (1 - p)``; None when nothing is dropped."""
        if self.p == 0.0 or not self.training:
            return None
        keep = 1.0 - self.p
        return x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)  # B, 1, ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._scale(x)
        return x if scale is None else x * scale

    def residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """``x + self(branch)`` in one pass over the tensors."""
        scale = self._scale(branch)
        return x + branch if scale is None else torch.addcmul(x, branch, scale)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class PatchEmbed(nn.Module):
    """Conv patch embedding + LayerNorm; the stem and Focal's / PVT's downsampling between stages.

    With ``batch_norm`` the norm is a ``BatchNorm2d`` over the conv's map instead
    (BiFormer-STL's stem).
    """

    def __init__(self, in_chans: int, dim: int, stride: int, *, overlap: bool = False, norm: bool = True,
                 batch_norm: bool = False) -> None:
        super().__init__()
        kernel, padding = embed_geometry(stride, overlap)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=padding)
        self.batch_norm = batch_norm
        self.norm: nn.Module = nn.BatchNorm2d(dim) if batch_norm else nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C_in, H, W)`` -> tokens ``(B, H'*W', C)`` and ``(H', W')``."""
        x = self.proj(x)  # B, C, H', W'
        hw = (x.shape[2], x.shape[3])
        if self.batch_norm:
            return self.norm(x).flatten(2).transpose(1, 2), hw  # B, H'*W', C
        return self.norm(x.flatten(2).transpose(1, 2)), hw  # B, H'*W', C


class ConvStem(nn.Module):
    """BiFormer's stem: two overlapping 3x3 stride-2 convs with BatchNorm and a GELU between."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C_in, H, W)`` -> tokens ``(B, H/4*W/4, C)`` and the map size."""
        x = self.layers(x)  # B, C, H/4, W/4
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # B, N, C


class ConvBNDownsample(nn.Module):
    """BiFormer's downsampling between stages: a 3x3 stride-2 conv and BatchNorm."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` -> ``(B, ceil(H/2)*ceil(W/2), C')`` and the new map size."""
        b, _, c = x.shape
        x = self.norm(self.conv(x.transpose(1, 2).reshape(b, c, hw[0], hw[1])))  # B, C', H/2, W/2
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # B, N', C'


class BNConvDownsample(nn.Module):
    """BiFormer-STL's downsampling between stages: BatchNorm, then a 2x2 stride-2 conv."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, out_dim, 2, stride=2)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` -> ``(B, floor(H/2)*floor(W/2), C')`` and the new map size."""
        b, _, c = x.shape
        x = self.conv(self.norm(x.transpose(1, 2).reshape(b, c, hw[0], hw[1])))  # B, C', H/2, W/2
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # B, N', C'


class PatchMerging(nn.Module):
    """Swin's downsampling: concatenate 2x2 neighbours, LayerNorm(4C), Linear(4C, C').

    The 4C channels are the official order ``[x(0,0), x(1,0), x(0,1), x(1,1)]`` (row, column
    offset in the 2x2 cell), gathered with one reshape and one permute (timm's layout) instead
    of four strided slices and a ``cat``: the same values, and a backward that is one permuted
    copy instead of a zero-filled map per slice. :meth:`forward_reference` keeps the slices.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    @staticmethod
    def _padded(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)  # B, H, W, C
        if h % 2 or w % 2:
            x = nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))  # B, H+h%2, W+w%2, C
        return x

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` of an ``hw`` map -> ``(B, ceil(H/2)*ceil(W/2), C')``."""
        x = self._padded(x, hw)  # B, H, W, C (H, W even)
        b, h, w, c = x.shape
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5)  # B, H/2, W/2, dw, dh, C
        x = x.reshape(b, (h // 2) * (w // 2), 4 * c)  # B, H/2*W/2, 4C: (dh, dw) = 00, 10, 01, 11
        return self.reduction(self.norm(x)), (h // 2, w // 2)  # B, H/2*W/2, C'

    def forward_reference(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """:meth:`forward` with the official code's four strided slices and ``cat``."""
        x = self._padded(x, hw)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)  # B, H/2, W/2, 4C
        hw2 = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.flatten(1, 2))), hw2  # B, H/2*W/2, C'


class ConvDownsample(nn.Module):
    """Focal's downsampling between stages: :class:`PatchEmbed` with stride 2 on the token map."""

    def __init__(self, dim: int, out_dim: int, *, overlap: bool = False) -> None:
        super().__init__()
        self.embed = PatchEmbed(dim, out_dim, 2, overlap=overlap)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` -> ``(B, H'*W', C')`` and ``(H', W')``."""
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])  # B, C, H, W
        return self.embed(x)


class Mlp(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))  # B, N, C
