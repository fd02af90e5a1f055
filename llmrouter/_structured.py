"""Structured output: a pydantic model in, a validated instance out (pure).

``chat.completions.parse(response_format=Model)`` sends the model's JSON schema as an OpenAI
``json_schema`` response format; each codec maps that to what its engine constrains with
(vLLM structured outputs, llama.cpp's top-level schema, TGI grammar, Ollama ``format``,
Anthropic's forced tool). The answer is validated here; output that does not validate raises
:class:`OutputParseError` carrying the raw text.
"""

from __future__ import annotations

from typing import Any

import pydantic

from llmrouter.errors import InvalidRequestError, OutputParseError
from llmrouter.types import ChatCompletion

__all__ = ["parse_completion", "response_format_for"]


def response_format_for(model: Any) -> dict[str, Any]:
    """The OpenAI ``json_schema`` response format for a pydantic model class."""
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        raise InvalidRequestError(
            f"response_format: parse() expects a pydantic model class, got {model!r}",
            param="response_format",
        )
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


def parse_completion(completion: ChatCompletion, model: type[pydantic.BaseModel]) -> None:
    """Validate every choice's content against ``model`` and attach it as ``message.parsed``."""
    for choice in completion.choices:
        text = choice.message.content
        if text is None:
            if choice.message.refusal:
                continue
            raise OutputParseError(
                "the model returned no content to parse", raw="", backend=completion.route.backend
            )
        try:
            parsed = model.model_validate_json(text)
        except pydantic.ValidationError as exc:
            raise OutputParseError(
                f"the model's output does not validate as {model.__name__}: "
                f"{exc.error_count()} error(s)",
                raw=text,
                backend=completion.route.backend,
                validation_error=exc,
            ) from exc
        choice.message.parsed = parsed
