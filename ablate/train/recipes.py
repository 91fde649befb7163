"""The training recipes: one table of values per recipe, and the rule that fills a study's
unset training keys from its recipe.

Pure data, no torch: the study schema resolves every trial's training settings from here,
and the resolved values are what a trial stores (``user_attrs["train"]``), so a database
says exactly how each model was trained.

``proxy`` is the laptop-scale loop ablate has always run: AdamW at a fixed rate, no
augmentation, no mixing (its only changes from before: the model's ``no_weight_decay()``
names are exempt from decay, and ``clip_grad`` / ``label_smoothing`` / ... act when a study
sets them). ``deit`` is the recipe all four papers train with, DeiT's (Touvron et al.,
ICML 2021, facebookresearch/deit ``main.py`` defaults) as adopted by Swin
(microsoft/Swin-Transformer ``config.py``), Focal (microsoft/Focal-Transformer, Swin's
code), FLatten (LeapLabTHU/FLatten-Transformer, DeiT's and Swin's code), BiFormer
(rayleizhu/BiFormer, DeiT's code) and PVT (whai362/PVT, DeiT's code):

========================  ==========================================================
key                       deit value (source)
========================  ==========================================================
lr                        5e-4 per 512 images, scaled linearly to the batch (DeiT
                          ``--lr 5e-4``, ``lr * batch / 512``; Swin ``BASE_LR 5e-4``)
weight_decay              0.05 (DeiT, Swin); none on norms, biases, and each model's
                          ``no_weight_decay()`` names (position tables, relative-position
                          bias tables, class tokens)
warmup_epochs             5 (DeiT; Swin-based studies set 20)
label_smoothing           0.1 (DeiT, Swin), soft targets when mixing
randaugment               ``rand-m9-mstd0.5-inc1`` (DeiT ``--aa``, Swin ``AUTO_AUGMENT``)
random_erasing            0.25, pixel mode, one box (DeiT ``--reprob``, Swin ``REPROB``)
mixup / cutmix            0.8 / 1.0, switched with probability 0.5 (DeiT, Swin)
clip_grad                 off (DeiT); Swin-based studies set 5.0 (Swin ``CLIP_GRAD``)
ema_decay                 off; 0.99996 keeps DeiT's model EMA (DeiT's ``main.py`` keeps
                          one by default but evaluates the model itself, so off changes
                          no reported number; an EMA is reported as ``top1_ema``)
amp                       on (CUDA only; the CPU always trains in float32)
========================  ==========================================================

Evaluation for ``deit`` resizes to ``image_size / 0.875`` (bicubic) and centre-crops
(crop_pct 0.875); training uses RandomResizedCrop (scale 0.08-1, bicubic) and horizontal
flips. At ``image_size`` <= 32 both DeiT's and Swin's codes switch to a random crop with
4 px padding and evaluate the image as it is; so does ``deit``. Drop path comes from the
model (each preset carries its paper's rate). Deliberate differences from DeiT's
``main.py``: the cosine schedule is per step and ends at 0 (DeiT: per epoch, warm-up from
1e-6, floor 1e-5; Swin: per step, 5e-7 / 5e-6), and there is no repeated augmentation
(DeiT's ``--repeated-aug``, a multi-GPU sampler; Swin does not use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BUDGET", "RECIPES", "RECIPE_KEYS", "resolve_recipe"]

#: The training defaults no recipe decides: the one table a study file's ``train:``
#: (:mod:`ablate.study.declaration`) and :class:`ablate.train.TrainConfig` both default to.
BUDGET: Mapping[str, Any] = {"epochs": 3, "batch_size": 128}

#: Each recipe's value for every key it decides (a study's explicit value wins).
RECIPES: Mapping[str, Mapping[str, Any]] = {
    "proxy": {
        "lr": 1.0e-3, "lr_batch": None, "weight_decay": 0.05, "warmup_epochs": 0, "label_smoothing": 0.0,
        "randaugment": "", "random_erasing": 0.0, "mixup": 0.0, "cutmix": 0.0, "clip_grad": 0.0,
        "ema_decay": 0.0, "amp": False,
    },
    "deit": {
        "lr": 5.0e-4, "lr_batch": 512, "weight_decay": 0.05, "warmup_epochs": 5, "label_smoothing": 0.1,
        "randaugment": "rand-m9-mstd0.5-inc1", "random_erasing": 0.25, "mixup": 0.8, "cutmix": 1.0,
        "clip_grad": 0.0, "ema_decay": 0.0, "amp": True,
    },
}
#: The training keys a recipe decides (everything in ``train:`` but epochs, batch_size, seed).
RECIPE_KEYS: tuple[str, ...] = tuple(RECIPES["proxy"])


def resolve_recipe(recipe: str, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """Every recipe key's value: the explicit one where it is set (not None), else the recipe's.

    Raises:
        KeyError: an unknown recipe (the schema rejects one before this is called).
    """
    table = RECIPES[recipe]
    return {key: explicit[key] if explicit.get(key) is not None else table[key] for key in RECIPE_KEYS}
