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
