"""Codec for Text Generation Inference's Messages API (``tgi://``).

TGI speaks the OpenAI chat protocol with its own rules (``shared/protocols/tgi.md``); until
those are mapped, requests go through the OpenAI-compatible codec unchanged.
"""

from llmrouter.backends.openai_compat import (
    ChunkDecoder,
    build_chat,
    build_health,
    build_models,
    map_error,
    parse_chat,
    parse_models,
)

__all__ = [
    "ChunkDecoder",
    "build_chat",
    "build_health",
    "build_models",
    "map_error",
    "parse_chat",
    "parse_models",
]
