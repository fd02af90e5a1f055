"""vLLM in this process (``vllm+local://``): vLLM's async engine behind the OpenAI shape.

One :class:`VLLMEngine` per (model, engine arguments) per process, shared by every client that
names it, started lazily on first use and shut down when its last client closes (or at exit).
The engine (``AsyncLLM``) lives on an event loop of its own, on a background thread owned by
this module (``llmrouter-vllm``): the async client awaits work there
(``_concurrency.aloop_call``/``aloop_iter``), the sync client blocks on the same futures
(``loop_call``/``loop_iter``), so both drive one engine. Cancelling the producer of a stream
(the consumer closed it) aborts the request in the engine.

Deadlines: each wait for the engine's next output is bounded by the request's
:class:`GenerationWatch` (total, time to first token, idle) on the engine's loop; when one
passes, the request is aborted in the engine (``AsyncLLM.abort``) and a
:class:`BackendTimeoutError` goes to the caller, for the sync and the async client alike.

The request mapping (:func:`build_plan`) is pure; vLLM is imported only when an engine starts.
Engine arguments come from the URL query (``?max_model_len=2048&enforce_eager=true``).

vLLM starts its engine core in a subprocess with the ``spawn`` method, which re-imports the
``__main__`` script there: a script that starts an engine at import time (outside
``if __name__ == "__main__":``) would start another one in that child, recursively.
:func:`acquire_engine` notices that in the child and the parent raises :class:`ConfigError`
saying so (docs/backends/vllm.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmrouter._concurrency import GenerationWatch
from llmrouter._request import ChatRequest
from llmrouter.backends import Capabilities
from llmrouter.backends._engines import IGNORED_IN_PROCESS, EngineRegistry
from llmrouter.backends.declaration import BackendDeclaration, Option
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    MissingDependencyError,
    ServerError,
)
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "CAPABILITIES",
    "SPAWN_GUARD_MESSAGE",
    "Plan",
    "VLLMEngine",
    "acquire_engine",
    "build_plan",
    "engine_kwargs",
    "release_engine",
]

# One choice per request; usage in streams (stream_options.include_usage); no logprobs yet.
CAPABILITIES = Capabilities(n=False, logprobs=False, stream_usage=True)

SPAWN_GUARD_MESSAGE = (
    "vllm+local:// starts vLLM's engine core in a subprocess with the 'spawn' method, which "
    "re-imports your __main__ script: the code that creates the client and sends requests must "
    'run under `if __name__ == "__main__":` (see docs/backends/vllm.md)'
)
# The parent names a file here; an engine started in a spawned child while it re-imports the
# parent's __main__ writes it, so the parent can say what went wrong (the child's own
# traceback goes to stderr only).
_SPAWN_MARKER_ENV = "LLMROUTER_VLLM_SPAWN_MARKER"

_INT_ARGS = frozenset(
    {"tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "max_num_seqs", "seed"}
)
_FLOAT_ARGS = frozenset({"gpu_memory_utilization"})
_BOOL_ARGS = frozenset({"enforce_eager", "trust_remote_code", "enable_prefix_caching"})
_STR_ARGS = frozenset(
    {
        "runner",
        "dtype",
        "distributed_executor_backend",
        "quantization",
        "tokenizer",
        "revision",
        "download_dir",
    }
)

_IGNORED = IGNORED_IN_PROCESS
# OpenAI field -> SamplingParams field.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "logit_bias": "logit_bias",
}
_HANDLED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "response_format",
        "tools",
        "tool_choice",
        "stream_options",
        "n",
    }
)
# vLLM sampling knobs callers may set through extra_body (SamplingParams fields).
_EXTRA_SAMPLING = frozenset(
    {
        "top_k",
        "min_p",
        "repetition_penalty",
        "min_tokens",
        "ignore_eos",
        "stop_token_ids",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "include_stop_str_in_output",
    }
)
_EXTRA_TEMPLATE = frozenset({"chat_template_kwargs"})


# -- the request plan (pure) -----------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """What one chat request asks of the engine, before any vLLM type is built.

    Attributes:
        messages: the conversation, for the tokenizer's chat template.
        template_kwargs: extra ``apply_chat_template`` arguments (``tools`` among them).
        sampling: ``SamplingParams`` keyword arguments (``max_tokens`` always set).
        structured: ``StructuredOutputsParams`` keyword arguments, when output is constrained.
        tool_mode: ``None`` (plain text), ``"named"`` (one forced function) or ``"required"``.
        tool_name: the forced function's name (``"named"``).
        include_usage: whether a stream ends with a usage chunk.
        model: the model name the response reports.
    """

    messages: list[dict[str, Any]]
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    structured: dict[str, Any] | None = None
    tool_mode: str | None = None
    tool_name: str | None = None
    include_usage: bool = False
    model: str = ""


def build_plan(request: ChatRequest, model: str, max_model_len: int | None = None) -> Plan:
    """Map an OpenAI-shaped request onto vLLM's sampling and structured-output parameters.

    Raises:
        InvalidRequestError: a parameter this backend cannot honour.
    """
    params = request.params
    unsupported = sorted(k for k in params if k not in _SAMPLING.keys() | _HANDLED | _IGNORED)
    if unsupported:
        raise InvalidRequestError(
            f"vllm+local:// backend does not support: {', '.join(unsupported)}",
            param=unsupported[0],
        )
    if params.get("n", 1) != 1:
        raise InvalidRequestError(
            "vllm+local:// backend generates one choice: n must be 1", param="n"
        )
    plan = Plan(messages=request.messages, model=model)
    sampling = plan.sampling
    for key, target in _SAMPLING.items():
        if params.get(key) is not None:
            sampling[target] = params[key]
    if "logit_bias" in sampling:
        sampling["logit_bias"] = {int(k): float(v) for k, v in sampling["logit_bias"].items()}
    # vLLM's own default is 16 tokens: say what the OpenAI API means (no limit but the context).
    sampling["max_tokens"] = params.get("max_completion_tokens", params.get("max_tokens"))
    plan.include_usage = bool((params.get("stream_options") or {}).get("include_usage"))

    unknown = sorted(k for k in request.extra_body if k not in _EXTRA_SAMPLING | _EXTRA_TEMPLATE)
    if unknown:
        raise InvalidRequestError(
            f"extra_body field(s) {', '.join(unknown)} are not vLLM sampling options; expected "
            f"any of {', '.join(sorted(_EXTRA_SAMPLING | _EXTRA_TEMPLATE))}",
            param=unknown[0],
        )
    for key, value in request.extra_body.items():
        if key == "chat_template_kwargs":
            plan.template_kwargs.update(value)
        else:
            sampling[key] = value

    fmt = params.get("response_format")
    if fmt is not None and fmt.get("type") == "json_object":
        plan.structured = {"json_object": True}
    elif fmt is not None and fmt.get("type") == "json_schema":
        plan.structured = {"json": fmt["json_schema"].get("schema", {})}
    _plan_tools(plan, params)
    return plan


def _plan_tools(plan: Plan, params: dict[str, Any]) -> None:
    tools = params.get("tools")
    if not tools:
        return
    plan.template_kwargs["tools"] = tools
    choice = params.get("tool_choice", "auto")
    if choice == "none":
        return
    if plan.structured is not None:
        raise InvalidRequestError(
            "vllm+local:// cannot combine response_format with a tool call", param="tool_choice"
        )
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        match = [t for t in tools if t.get("function", {}).get("name") == name]
        if not match:
            raise InvalidRequestError(
                f"tool_choice names {name!r}, which is not among the tools", param="tool_choice"
            )
        plan.tool_mode, plan.tool_name = "named", name
        plan.structured = {"json": _parameters(match[0])}
    elif choice == "required":
        # The OpenAI server's own constraint for tool_choice="required": a list of calls.
        plan.tool_mode = "required"
        plan.structured = {
            "json": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string", "enum": [t["function"]["name"]]},
                                "parameters": _parameters(t),
                            },
                            "required": ["name", "parameters"],
                        }
                        for t in tools
                    ]
                },
            }
        }
    else:
        # Telling a tool call from text needs a model-specific tool parser (vLLM's server has
        # them: --enable-auto-tool-choice --tool-call-parser NAME); the engine API has none.
        raise InvalidRequestError(
            "vllm+local:// supports tools with tool_choice='required', 'none' or a named "
            "function; tool_choice='auto' needs a tool-call parser: serve the model with "
            "vllm serve --enable-auto-tool-choice and use vllm://",
            param="tool_choice",
        )


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = tool.get("function", {}).get("parameters") or {
        "type": "object",
        "properties": {},
    }
    return params


def _check_model_path(url: str, path: str) -> None:
    """:class:`ConfigError` unless ``path`` is what vLLM loads from disk: a Hugging Face model
    folder (with ``config.json``) or a GGUF file, never any file a relative path reaches."""
    resolved = os.path.abspath(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"{url}: {resolved} has no config.json; expected a model folder")
        return
    if not os.path.exists(path):
        raise ConfigError(f"{url}: model path not found: {resolved}")
    try:
        with open(path, "rb") as file:
            gguf = file.read(4) == b"GGUF"
    except OSError as exc:
        raise ConfigError(f"{url}: cannot read {resolved} ({exc.strerror})") from None
    if not gguf:
        raise ConfigError(
            f"{url}: {resolved} is neither a model folder nor a GGUF file; expected "
            "vllm+local:///path/to/hf-model-folder or a hub id (ORG/MODEL)"
        )


def engine_kwargs(spec: BackendSpec) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments from the URL (model and query)."""
    location = spec.location
    model = os.path.expanduser(location) if location.startswith(("/", ".", "~")) else location
    kwargs: dict[str, Any] = {"model": model}
    for key, raw in spec.options:
        try:
            if key in _INT_ARGS:
                kwargs[key] = int(raw)
            elif key in _FLOAT_ARGS:
                kwargs[key] = float(raw)
            elif key in _BOOL_ARGS:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                kwargs[key] = raw.lower() in ("true", "1", "yes")
            elif key in _STR_ARGS:
                kwargs[key] = raw
        except ValueError:
            kind = (
                "an integer"
                if key in _INT_ARGS
                else "a number"
                if key in _FLOAT_ARGS
                else "true or false"
            )
            raise ConfigError(f"vllm+local:// option {key}={raw!r}: expected {kind}") from None
    return kwargs


# -- errors ----------------------------------------------------------------------------------


def map_error(exc: BaseException, backend: str) -> BaseException:
    """A vLLM exception as the typed error (by class name: vLLM is imported lazily)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (InvalidRequestError, BackendError)):
        return exc
    if "EngineDeadError" in names:
        return ServerError(f"the vLLM engine died: {text}", backend=backend, status_code=503)
    if names & {"QueueOverflowError", "MaxQueuedTokensError", "GracefulHTTPError"}:
        return ServerError(text, backend=backend, status_code=503)
    if names & {"VLLMValidationError", "ValueError", "TypeError"} or "ValidationError" in names:
        if "maximum model length" in text or "max_model_len" in text or "context length" in text:
            return ContextLengthError(text, backend=backend, status_code=400)
        return BadRequestError(text, backend=backend, status_code=400)
    return ServerError(f"{type(exc).__name__}: {text}", backend=backend, status_code=500)


# -- the engine ------------------------------------------------------------------------------


def _start_llm(kwargs: dict[str, Any]) -> Any:
    """``AsyncLLM.from_engine_args``, translating a failure in an unguarded script's spawned
    engine core into the error that says what to do."""
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    with tempfile.NamedTemporaryFile(prefix="llmrouter-vllm-") as named:
        marker = named.name  # a fresh path; the file itself goes away here
    previous = os.environ.get(_SPAWN_MARKER_ENV)
    os.environ[_SPAWN_MARKER_ENV] = marker  # the spawned engine core inherits it
    try:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
    except Exception as exc:
        if os.path.exists(marker):
            raise ConfigError(SPAWN_GUARD_MESSAGE) from exc
        raise
    finally:
        if previous is None:
            os.environ.pop(_SPAWN_MARKER_ENV, None)
        else:
            os.environ[_SPAWN_MARKER_ENV] = previous
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)


def _in_spawn_bootstrap() -> bool:
    """True in a ``spawn``-started child that is still re-importing the parent's __main__
    (the flag multiprocessing itself checks before refusing to start a process)."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


class VLLMEngine:
    """One vLLM ``AsyncLLM`` on its own event loop thread, with its tokenizer."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise MissingDependencyError("vllm", "vllm", "vllm+local://") from None
        import asyncio

        self.kwargs = kwargs
        self.model_name: str = kwargs["model"].rstrip("/").rsplit("/", 1)[-1]
        self.users = 0
        self.dead = False
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="llmrouter-vllm", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()
        except BaseException:
            self._stop_loop()
            raise
        self.max_model_len: int = int(self.llm.model_config.max_model_len)

    async def _start(self) -> None:
        """Build the engine on its own loop (its output handler binds to this loop)."""
        self.llm: Any = _start_llm(self.kwargs)
        self.tokenizer: Any = self.llm.get_tokenizer()

    def _prompt(self, plan: Plan) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(
                plan.messages,
                tokenize=True,
                add_generation_prompt=True,
                return_dict=False,
                **plan.template_kwargs,
            )
        except Exception as exc:  # jinja2 errors: roles the template refuses, and the like
            raise InvalidRequestError(
                f"the model's chat template rejected the messages: {exc}"
            ) from exc
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    def _sampling_params(self, plan: Plan, prompt_len: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kwargs = dict(plan.sampling)
        if plan.structured is not None:
            try:
                from vllm.sampling_params import StructuredOutputsParams
            except ImportError:
                raise InvalidRequestError(
                    "this vLLM version has no structured outputs: response_format and forced "
                    "tool calls need vLLM >= 0.11",
                    param="response_format" if plan.tool_mode is None else "tool_choice",
                ) from None
            kwargs["structured_outputs"] = StructuredOutputsParams(**plan.structured)
        if kwargs.get("max_tokens") is not None and (
            prompt_len + kwargs["max_tokens"] > self.max_model_len
        ):
            raise ContextLengthError(
                f"this model's maximum context length is {self.max_model_len} tokens; the "
                f"messages take {prompt_len} and max_tokens asks for {kwargs['max_tokens']}",
                status_code=400,
            )
        if kwargs.get("max_tokens") is None:
            kwargs["max_tokens"] = max(self.max_model_len - prompt_len, 1)
        return SamplingParams(output_kind=RequestOutputKind.DELTA, **kwargs)

    async def generate(
        self, plan: Plan, backend: str, watch: GenerationWatch | None = None
    ) -> AsyncIterator[_Delta]:
        """Deltas of one request, on the engine's loop; closing this generator (or cancelling
        the task that iterates it) aborts the request in the engine, and so does a limit of
        ``watch`` passing (:class:`BackendTimeoutError`)."""
        import asyncio

        request_id = f"llmrouter-{uuid.uuid4().hex}"
        try:
            prompt = self._prompt(plan)
            params = self._sampling_params(plan, len(prompt))
        except Exception as exc:
            raise map_error(exc, backend) from exc
        finished = False
        try:
            outputs = self.llm.generate({"prompt_token_ids": prompt}, params, request_id)
            while True:  # to the generator's end, as `async for` would
                limit = None if watch is None else watch.remaining()
                try:
                    if limit is None:
                        out = await outputs.__anext__()
                    else:
                        # Cancels the wait (vLLM then aborts the request itself) at the limit.
                        out = await asyncio.wait_for(outputs.__anext__(), limit)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    assert watch is not None
                    raise watch.timeout() from None
                if watch is not None:
                    watch.token(sum(len(c.token_ids) for c in out.outputs))
                for completion in out.outputs:
                    yield _Delta(
                        text=completion.text,
                        tokens=len(completion.token_ids),
                        finish_reason=completion.finish_reason,
                        prompt_tokens=len(prompt),
                    )
                finished = out.finished
                if watch is not None:
                    watch.waiting()
        except (InvalidRequestError, BackendError):
            raise
        except Exception as exc:
            if type(exc).__name__ == "EngineDeadError":
                self.dead = True
            raise map_error(exc, backend) from exc
        finally:
            if not finished and not self.dead:
                await self.llm.abort(request_id)

    async def complete(
        self, plan: Plan, backend: str, watch: GenerationWatch | None = None
    ) -> ChatCompletion:
        """One whole completion.

        Raises:
            BackendTimeoutError: a limit of ``watch`` passed; ``partial_text`` holds what the
                engine had generated by then.
        """
        parts: list[str] = []
        tokens = prompt_tokens = 0
        reason: str | None = None
        try:
            async for delta in self.generate(plan, backend, watch):
                parts.append(delta.text)
                tokens += delta.tokens
                prompt_tokens = delta.prompt_tokens
                reason = delta.finish_reason or reason
        except BackendTimeoutError as exc:
            exc.partial_text = "".join(parts)
            raise
        return _completion(plan, "".join(parts), reason, prompt_tokens, tokens)

    async def stream(
        self, plan: Plan, backend: str, watch: GenerationWatch | None = None
    ) -> AsyncIterator[ChatCompletionChunk]:
        """OpenAI chunks as the engine produces tokens (tool calls: one chunk at the end)."""
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], reason: str | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk.model_validate(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": plan.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                }
            )

        yield chunk({"role": "assistant", "content": ""})
        parts: list[str] = []
        tokens = prompt_tokens = 0
        reason: str | None = None
        async for delta in self.generate(plan, backend, watch):
            tokens += delta.tokens
            prompt_tokens = delta.prompt_tokens
            reason = delta.finish_reason or reason
            if plan.tool_mode is not None:
                parts.append(delta.text)
            elif delta.text:
                yield chunk({"content": delta.text})
        if plan.tool_mode is not None:
            calls = _tool_calls(plan, "".join(parts))
            yield chunk({"tool_calls": [dict(c, index=i) for i, c in enumerate(calls)]})
            reason = "tool_calls" if reason == "stop" else reason
        yield chunk({}, _finish_reason(reason))
        if plan.include_usage:
            yield ChatCompletionChunk.model_validate(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": plan.model,
                    "choices": [],
                    "usage": _usage(prompt_tokens, tokens),
                }
            )

    async def check_health(self) -> None:
        """Raise :class:`ServerError` when the engine core has died."""
        try:
            await self.llm.check_health()
        except Exception as exc:
            self.dead = True
            raise map_error(exc, "") from exc

    def close(self) -> None:
        """Shut the engine core down and stop the loop thread."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            import asyncio

            async def shutdown() -> None:
                llm.shutdown()

            # Shutting down anyway: a dead engine may refuse politely.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=60)
            self.llm = None
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
        if not self.loop.is_running():
            self.loop.close()


@dataclass(slots=True)
class _Delta:
    text: str
    tokens: int
    finish_reason: str | None
    prompt_tokens: int


def _finish_reason(reason: str | None) -> str:
    # vLLM adds "abort", "error" and "repetition" to OpenAI's set.
    if reason in ("stop", "length", "tool_calls"):
        return reason
    if reason == "repetition":
        return "stop"
    return reason or "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _tool_calls(plan: Plan, text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        # A length cut (max_tokens) can leave the constrained JSON unfinished.
        raise BackendError(
            f"the constrained tool call is not complete JSON (raise max_tokens?): {text[:200]!r}",
            retryable=False,
        ) from exc
    if plan.tool_mode == "named":
        calls = [(plan.tool_name, value)]
    else:
        calls = [(c["name"], c["parameters"]) for c in value]
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        for name, args in calls
    ]


def _completion(
    plan: Plan, text: str, reason: str | None, prompt_tokens: int, tokens: int
) -> ChatCompletion:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = _finish_reason(reason)
    if plan.tool_mode is not None:
        message = {"role": "assistant", "content": None, "tool_calls": _tool_calls(plan, text)}
        finish = "tool_calls" if finish == "stop" else finish
    return ChatCompletion.model_validate(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(prompt_tokens, tokens),
        }
    )


def model_list(engine: VLLMEngine, model: str) -> ModelList:
    """The one model this engine serves."""
    return ModelList.model_validate(
        {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "vllm"}],
        }
    )


# -- the per-process registry ----------------------------------------------------------------


_registry: EngineRegistry[VLLMEngine] = EngineRegistry()
_engines = _registry.engines  # read by tests


def acquire_engine(spec: BackendSpec) -> VLLMEngine:
    """The shared engine for ``spec``, started on first use (slow: call from a thread).

    Raises:
        ConfigError: bad engine arguments, or an engine started while a spawned child
            re-imports the parent's unguarded ``__main__``.
        MissingDependencyError: vLLM is not installed.
    """
    kwargs = engine_kwargs(spec)
    if spec.location.startswith(("/", ".", "~")):
        _check_model_path(f"vllm+local://{spec.location}", kwargs["model"])
    if _in_spawn_bootstrap():
        marker = os.environ.get(_SPAWN_MARKER_ENV)
        if marker:
            with open(marker, "w") as fh:
                fh.write("spawn\n")
        raise ConfigError(SPAWN_GUARD_MESSAGE)
    key = tuple(sorted(kwargs.items()))
    return _registry.acquire(key, lambda: VLLMEngine(kwargs), stale=lambda e: e.dead)


def release_engine(engine: VLLMEngine) -> None:
    """Drop one user; the last one shuts the engine down."""
    _registry.release(engine)


BACKEND = BackendDeclaration(
    "vllm+local",
    description="vLLM in this process",
    async_engine="llmrouter._async.vllm_backend:AsyncVLLMBackend",
    sync_engine="llmrouter._sync.vllm_backend:VLLMBackend",
    location="name",
    location_hint="vllm+local://ORG/MODEL (a hub id) or vllm+local:///path/to/hf-model-folder",
    # vLLM engine arguments (AsyncEngineArgs fields of the same names).
    options=(
        Option("tensor_parallel_size", "int", minimum=1),
        Option("pipeline_parallel_size", "int", minimum=1),
        Option("gpu_memory_utilization", "float", minimum=0),
        Option("max_model_len", "int", minimum=1),
        Option("max_num_seqs", "int", minimum=1),
        Option("dtype"),
        Option("enforce_eager", "bool"),
        Option("distributed_executor_backend"),
        Option("quantization"),
        Option("seed", "int"),
        Option("trust_remote_code", "bool"),
        Option("enable_prefix_caching", "bool"),
        Option("tokenizer"),
        Option("revision"),
        Option("download_dir"),
        Option("runner", choices=("auto", "generate", "pooling"), help="pooling: embeddings"),
    ),
    capabilities=CAPABILITIES,
    embeddings=True,
)
