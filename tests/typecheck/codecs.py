"""Static check (mypy --strict, run in CI): every built-in HTTP codec module satisfies the
public :class:`llmrouter.backends.HTTPCodec` protocol, as a plugin's module would."""

from __future__ import annotations

from llmrouter.backends import (
    anthropic,
    azure,
    bedrock,
    gemini,
    ollama,
    openai_compat,
    sagemaker,
    tgi,
)
from llmrouter.backends.interfaces import HTTPCodec

CODECS: list[HTTPCodec] = [openai_compat, tgi, ollama, anthropic, azure, sagemaker, bedrock, gemini]
