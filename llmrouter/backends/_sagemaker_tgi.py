"""The SageMaker codec's ``tgi`` dialect requests: a prompt built from the messages by a chat
template, and TGI's ``parameters`` (``shared/protocols/sagemaker.md``, ``tgi.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmrouter._request import ChatRequest
from llmrouter.config import BackendSpec
from llmrouter.errors import InvalidRequestError

__all__ = ["CHAT_TEMPLATES", "render_prompt", "tgi_body"]


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"sagemaker: {message}", param=param)


def _options(spec: BackendSpec) -> dict[str, str]:
    return dict(spec.options)


CHAT_TEMPLATES = ("chatml", "llama3")
_TEMPLATE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "user"}


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.get("type") == "text":
            texts.append(part["text"])
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise _fail(
                f"{where}.content[{j}]: the tgi dialect takes text only, not {part.get('type')!r}",
                f"{where}.content[{j}]",
            )
    return "\n".join(texts)


def render_prompt(messages: list[dict[str, Any]], template: str) -> str:
    """The prompt for ``messages`` in a built-in chat template, ending with the assistant's
    turn opened: ``chatml`` (``<|im_start|>role ... <|im_end|>``) or ``llama3``."""
    if template not in CHAT_TEMPLATES:
        raise _fail(
            f"chat_template={template!r}: expected one of {', '.join(CHAT_TEMPLATES)}",
            "chat_template",
        )
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        where = f"messages[{i}]"
        if role not in ("system", "developer", "user", "assistant") or message.get("tool_calls"):
            raise _fail(
                f"{where}: the tgi dialect's chat templates hold system, user and assistant "
                "text only (no tool calls or tool results)",
                where,
            )
        turns.append(
            ("system" if role == "developer" else str(role), _text(message.get("content"), where))
        )
    if template == "chatml":
        text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
        return text + "<|im_start|>assistant\n"
    text = "".join(
        f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
        for role, content in turns
    )
    return "<|begin_of_text|>" + text + "<|start_header_id|>assistant<|end_header_id|>\n\n"


# Fields that change nothing about the generated text.
_TGI_IGNORED = frozenset({
    "user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier",
    "parallel_tool_calls", "stream_options",
})  # fmt: skip
_TGI_UNSUPPORTED = {
    "presence_penalty": "use extra_body={'parameters': {'repetition_penalty': ...}}",
    "logit_bias": "no logit bias",
    "logprobs": "no log probabilities (use the messages dialect)",
    "top_logprobs": "no log probabilities (use the messages dialect)",
    "audio": "text only",
    "modalities": "text only",
    "prediction": "no predicted outputs",
    "web_search_options": "no web search",
    "functions": "no tools (use the messages dialect)",
    "function_call": "no tools (use the messages dialect)",
    "tools": "no tools (use the messages dialect)",
    "reasoning_effort": "no reasoning control",
    "verbosity": "no verbosity control",
}


def _tgi_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI fields -> TGI/LMI ``parameters``; ``details`` asked for (finish reason, counts)."""
    out: dict[str, Any] = {"details": True}
    for name in params:
        if name in _TGI_UNSUPPORTED and not (name == "modalities" and params[name] == ["text"]):
            raise _fail(f"{name}: the tgi dialect has {_TGI_UNSUPPORTED[name]}", name)
    limit = params.get("max_completion_tokens", params.get("max_tokens"))
    if limit is not None:
        out["max_new_tokens"] = limit
    temperature = params.get("temperature")
    if temperature is not None:
        if temperature == 0:
            out["do_sample"] = False  # TGI wants temperature > 0: zero means greedy
        else:
            out["temperature"] = temperature
    top_p = params.get("top_p")
    if top_p is not None and 0 < top_p < 1:  # TGI wants 0 < top_p < 1; 1 is "off"
        out["top_p"] = top_p
    stop = params.get("stop")
    if stop:
        out["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("seed") is not None:
        out["seed"] = params["seed"]
    if params.get("frequency_penalty") is not None:
        out["frequency_penalty"] = params["frequency_penalty"]
    if params.get("n", 1) != 1:
        raise _fail("n: the tgi dialect generates one choice per request", "n")
    if params.get("tool_choice") not in (None, "none"):
        raise _fail("tool_choice: the tgi dialect has no tools", "tool_choice")
    fmt = params.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        schema = fmt["json_schema"].get("schema") if isinstance(fmt, dict) else None
        out["grammar"] = {"type": "json", "value": schema if isinstance(schema, dict) else {}}
    elif kind == "json_object":
        raise _fail("response_format json_object: the tgi dialect needs a json_schema", kind)
    known = {*_TGI_IGNORED, *_TGI_UNSUPPORTED, "max_tokens", "max_completion_tokens", "n"}
    known |= {"temperature", "top_p", "stop", "seed", "frequency_penalty", "tool_choice"}
    unknown = sorted(set(params) - known - {"response_format"})
    if unknown:
        raise _fail(f"{unknown[0]} is not supported by the tgi dialect", unknown[0])
    return out


def tgi_body(spec: BackendSpec, request: ChatRequest) -> dict[str, Any]:
    template = _options(spec).get("chat_template") or "chatml"
    parameters = _tgi_parameters(request.params)
    extra = dict(request.extra_body)
    extra_parameters = extra.pop("parameters", None)
    if extra_parameters is not None:
        if not isinstance(extra_parameters, Mapping):
            raise _fail("extra_body['parameters']: expected a dict", "extra_body")
        parameters.update(extra_parameters)
    body: dict[str, Any] = {
        "inputs": render_prompt(request.messages, template),
        "parameters": parameters,
        "stream": request.stream,
    }
    body.update(extra)
    return body
