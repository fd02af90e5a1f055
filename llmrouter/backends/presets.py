"""One-line presets for OpenAI-compatible providers: ``groq://``, ``together://``,
``mistral://``, ``deepseek://``, ``openrouter://``, ``fireworks://``, ``xai://``,
``cerebras://``, ``perplexity://`` and ``gemini-openai://``.

Each is data: a :class:`BackendDeclaration` (base URL, key variable, capabilities) and a row
of :data:`QUIRKS` (parameters the provider's docs say it rejects, refused here with
``InvalidRequestError`` before sending; parameters it ignores, left out). The codec is
:mod:`llmrouter.backends.openai_compat`'s, with the quirks applied in front of its
``build_chat``. What each row relies on: ``docs/backends/providers.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter.backends import BackendDeclaration, BackendSpec, Capabilities, openai_compat
from llmrouter.errors import InvalidRequestError

__all__ = [
    "CAPABILITIES", "PRESETS", "QUIRKS", "ChunkDecoder", "Preset", "build_chat", "build_health",
    "build_models", "map_error", "parse_chat", "parse_models",
]  # fmt: skip

# The codec's other functions are openai_compat's own.
ChunkDecoder = openai_compat.ChunkDecoder
parse_chat = openai_compat.parse_chat
map_error = openai_compat.map_error
build_models = openai_compat.build_models
parse_models = openai_compat.parse_models
build_health = openai_compat.build_health

# The OpenAI protocol's (a preset's own row narrows it).
CAPABILITIES = Capabilities(n=True, logprobs=True)


class Preset(NamedTuple):
    """One provider: where it is, its key, what it rejects and what it ignores."""

    scheme: str
    description: str
    base_url: str  # https://host/path
    key_env: tuple[str, ...]
    capabilities: Capabilities
    rejects: tuple[str, ...] = ()  # body fields the provider's docs say it refuses (400)
    drops: tuple[str, ...] = ()  # fields it does not take and that change nothing: not sent


_NO_EXTRAS = Capabilities(n=False, logprobs=False)

PRESETS = (
    # console.groq.com/docs/openai: logprobs, logit_bias, top_logprobs and messages[].name
    # are not supported (400); n must be 1.
    Preset(
        "groq", "Groq (OpenAI-compatible)", "https://api.groq.com/openai/v1", ("GROQ_API_KEY",),
        _NO_EXTRAS, rejects=("logit_bias", "top_logprobs", "logprobs"),
    ),
    Preset(
        "together", "Together AI (OpenAI-compatible)", "https://api.together.xyz/v1",
        ("TOGETHER_API_KEY",), Capabilities(n=True, logprobs=True),
    ),
    # docs.mistral.ai: the chat API names its seed random_seed; no logit_bias, no logprobs.
    Preset(
        "mistral", "Mistral AI (OpenAI-compatible chat)", "https://api.mistral.ai/v1",
        ("MISTRAL_API_KEY",), Capabilities(n=True, logprobs=False),
        rejects=("logit_bias",), drops=("store", "metadata", "service_tier"),
    ),
    # api-docs.deepseek.com: OpenAI-compatible at https://api.deepseek.com (also /v1); no n.
    Preset(
        "deepseek", "DeepSeek (OpenAI-compatible)", "https://api.deepseek.com/v1",
        ("DEEPSEEK_API_KEY",), Capabilities(n=False, logprobs=True, seed=False),
    ),
    Preset(
        "openrouter", "OpenRouter (OpenAI-compatible)", "https://openrouter.ai/api/v1",
        ("OPENROUTER_API_KEY",), Capabilities(n=False, logprobs=True),
    ),
    Preset(
        "fireworks", "Fireworks AI (OpenAI-compatible)", "https://api.fireworks.ai/inference/v1",
        ("FIREWORKS_API_KEY",), Capabilities(n=True, logprobs=True),
    ),
    Preset(
        "xai", "xAI Grok (OpenAI-compatible)", "https://api.x.ai/v1", ("XAI_API_KEY",),
        Capabilities(n=True, logprobs=True),
    ),
    # inference-docs.cerebras.ai (OpenAI compatibility): frequency_penalty, logit_bias,
    # presence_penalty, parallel_tool_calls and service_tier are not supported (400).
    Preset(
        "cerebras", "Cerebras Inference (OpenAI-compatible)", "https://api.cerebras.ai/v1",
        ("CEREBRAS_API_KEY",), _NO_EXTRAS,
        rejects=("frequency_penalty", "logit_bias", "presence_penalty", "parallel_tool_calls",
                 "service_tier"),
    ),
    # docs.perplexity.ai: chat completions at https://api.perplexity.ai; no tools, no n.
    Preset(
        "perplexity", "Perplexity Sonar (OpenAI-compatible)", "https://api.perplexity.ai",
        ("PERPLEXITY_API_KEY", "PPLX_API_KEY"),
        Capabilities(tools=False, tool_choice=False, json_object=False, seed=False),
        rejects=("logit_bias", "logprobs", "top_logprobs"),
    ),
    # ai.google.dev/gemini-api/docs/openai: Gemini's OpenAI-compatible endpoint.
    Preset(
        "gemini-openai", "Gemini's OpenAI-compatible endpoint",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"), Capabilities(n=True, logprobs=False),
        rejects=("logit_bias",),
    ),
)  # fmt: skip

QUIRKS: Mapping[str, Preset] = {p.scheme: p for p in PRESETS}


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """openai_compat's request, after the provider's documented refusals and omissions."""
    preset = QUIRKS.get(spec.scheme)
    if preset is not None:
        for name in preset.rejects:
            value = request.params.get(name)
            if value is not None and value is not False:
                raise InvalidRequestError(
                    f"{spec.scheme}:// does not accept {name} (the provider answers 400)",
                    param=name,
                )
        if any(name in request.params for name in preset.drops):
            params = {k: v for k, v in request.params.items() if k not in preset.drops}
            request = dataclasses.replace(request, params=params)
    return openai_compat.build_chat(spec, request, model)


# Providers whose OpenAI-compatible API has /embeddings too (their API references).
_EMBEDS = frozenset({"together", "mistral", "fireworks", "openrouter", "gemini-openai"})


def _declaration(preset: Preset) -> BackendDeclaration:
    host_and_path = preset.base_url.removeprefix("https://")
    host, _, path = host_and_path.partition("/")
    return BackendDeclaration(
        preset.scheme,
        description=preset.description,
        default_host=host,
        default_path="/" + path if path else "",
        transport="https",
        key_env=preset.key_env,
        key_required=True,
        capabilities=preset.capabilities,
        embeddings=preset.scheme in _EMBEDS,
        embeddings_codec="llmrouter.backends.openai_embed",
    )


BACKENDS = tuple(_declaration(p) for p in PRESETS)
