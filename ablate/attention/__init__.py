"""Token mixers (attention families) behind one interface and one registry.

Importing this package registers every family (``softmax``, ``focal``, ...).
"""

from ablate.attention._registry import (
    BlockContext,
    MixerOptions,
    Mixer2d,
    TokenMixer,
    check_mixer,
    create_mixer,
    get_attention,
    list_attention,
    parse_options,
    register_attention,
)
from ablate.attention import softmax as _softmax  # noqa: F401  (registers "softmax")
from ablate.attention import focal as _focal  # noqa: F401  (registers "focal")
from ablate.attention import lavit as _lavit  # noqa: F401  (registers "lavit")
from ablate.attention import flatten as _flatten  # noqa: F401  (registers "flatten")
from ablate.attention import biformer as _biformer  # noqa: F401  (registers "biformer")

__all__ = [
    "BlockContext",
    "MixerOptions",
    "Mixer2d",
    "TokenMixer",
    "check_mixer",
    "create_mixer",
    "get_attention",
    "list_attention",
    "parse_options",
    "register_attention",
]
