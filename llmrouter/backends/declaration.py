"""How a backend describes itself: :class:`BackendDeclaration`, its :class:`Option` values and
its :class:`Capabilities`. Pure data, no I/O.

Every backend, built-in or plugin, declares itself the same way, beside its code::

    BACKEND = BackendDeclaration(
        scheme="myengine",
        description="My engine's HTTP API",
        default_port=9000,
        key_env="MYENGINE_API_KEY",
        options=(Option("mode", choices=("fast", "exact"), default="fast"),),
        capabilities=Capabilities(json_schema=False),
    )

A module that serves several schemes (``openai_compat``: ``http``, ``https``, ``openai``, ``vllm``,
``llamacpp``) declares ``BACKENDS = (...)``. ``llmrouter.config`` reads the declaration of the
scheme a URL names and does the rest generically: host, port and path defaults, the key, the
query options. See ``docs/plugins.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from llmrouter.errors import ConfigError

if TYPE_CHECKING:
    from llmrouter.backends.spec import BackendSpec

__all__ = ["BackendDeclaration", "Capabilities", "Option", "URLParts"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend's protocol can do; each backend declares its own.

    A request that needs a capability a backend lacks is an ``InvalidRequestError`` there,
    never a silently dropped feature; in a chain, that backend is skipped.
    """

    tools: bool = True
    tool_choice: bool = True
    json_object: bool = True
    json_schema: bool = True
    stream_usage: bool = True
    seed: bool = True
    n: bool = False  # more than one choice per request
    logprobs: bool = False
    stop: bool = True


OptionType = Literal["str", "int", "float", "bool"]
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True)
class Option:
    """One query parameter a backend's URLs accept (``?name=value``).

    Attributes:
        name: the parameter's name.
        type: ``str``, ``int``, ``float`` or ``bool`` (``true``/``false``/``1``/``0``).
        choices: the allowed values, when the set is closed.
        minimum: the smallest number allowed (``int``/``float``).
        default: the value a URL that omits it gets (kept in ``spec.options``).
        help: one line for the docs.
    """

    name: str
    type: OptionType = "str"
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    default: str | None = None
    help: str = ""

    def validate(self, raw: str) -> str:
        """``raw`` if it is a valid value; a :class:`ConfigError` saying what was expected."""
        where = f"query parameter {self.name}={raw!r}"
        if self.choices is not None and raw not in self.choices:
            raise ConfigError(f"{where}: expected one of {', '.join(self.choices)}")
        if self.type == "bool":
            if raw.lower() not in _BOOLEANS:
                raise ConfigError(f"{where}: expected true or false")
        elif self.type in ("int", "float"):
            try:
                value = int(raw) if self.type == "int" else float(raw)
            except ValueError:
                kind = "a whole number" if self.type == "int" else "a number"
                raise ConfigError(f"{where}: expected {kind}") from None
            if not math.isfinite(value) or (self.minimum is not None and value < self.minimum):
                low = "" if self.minimum is None else f" >= {self.minimum:g}"
                raise ConfigError(f"{where}: expected a finite number{low}")
        return raw


@dataclass(frozen=True, slots=True)
class URLParts:
    """A backend URL, split (what a :attr:`BackendDeclaration.configure` hook reads).

    Attributes:
        scheme: the backend scheme, less any ``+http``/``+https``.
        transport: ``http`` or ``https`` when the URL said ``+http``/``+https``, else ``None``.
        netloc: the authority as written (case kept), without userinfo.
        host: the host name (lower case), or ``None``.
        port: the port, or ``None``.
        path: the path as written.
        query: the query parameters (each given once).
    """

    scheme: str
    transport: str | None
    netloc: str
    host: str | None
    port: int | None
    path: str
    query: Mapping[str, str]


Configure = Callable[["BackendSpec", URLParts, Mapping[str, str]], "BackendSpec"]


@dataclass(frozen=True, slots=True)
class BackendDeclaration:
    """One URL scheme and the backend that serves it.

    Exactly one of ``codec`` (an HTTP backend) or ``async_engine``/``sync_engine`` (an
    in-process engine) says how requests are served.

    Attributes:
        scheme: the URL scheme (``myengine`` for ``myengine://host``); lower case.
        codec: for HTTP backends, the sans-IO codec (a module or object implementing
            :class:`llmrouter.backends.HTTPCodec`), or its import path; ``None`` with no engine
            means the module that declares it.
        async_engine: for in-process engines, the class (or ``"module:Class"``) implementing
            :class:`llmrouter.backends.AsyncEngine`, built as ``cls(spec)``.
        sync_engine: the same for :class:`llmrouter.backends.Engine` (the sync client).
        description: one line for docs and errors.
        default_host: the host a URL without one gets (``api.openai.com``).
        default_port: the port a URL without one gets.
        default_path: the path a URL without one gets (``/v1``; ``""`` for none).
        transport: ``http`` or ``https``, unless the URL says ``+http``/``+https``.
        location: ``host``: the URL's authority is a server (``base_url`` is built);
            ``name``: it names a thing (a model, an endpoint, a file): ``spec.location`` holds
            authority and path as written, and no ``base_url`` is built.
        key_env: the conventional variable(s) for the key, first set wins.
        key_required: a missing key is a :class:`ConfigError`.
        options: the backend's own query parameters.
        capabilities: what the protocol can do.
        configure: an optional hook ``(spec, url, env) -> spec`` for what data cannot say
            (Azure's deployment path, Ollama's ``OLLAMA_HOST``); raise ``ConfigError`` there.
        default_address: an optional ``env -> (host, port)`` for URLs without a host.
        embeddings: the backend serves embeddings (``client.embeddings.create``); without it
            an embeddings request skips the backend.
        embeddings_codec: for HTTP backends that embed, the module (or object, or import
            path) defining ``EMBED_LIMITS``, ``build_embed`` and ``parse_embed`` (see
            ``docs/plugins.md``); ``None``: the backend's ``codec`` defines them. Engines
            implement ``embed(request, deadline)`` instead.
        module: the module that declares it (filled in by the registry).
    """

    scheme: str
    codec: ModuleType | object | str | None = None
    async_engine: type | str | None = None
    sync_engine: type | str | None = None
    description: str = ""
    default_host: str | None = None
    default_port: int | None = None
    default_path: str = "/v1"
    transport: Literal["http", "https"] = "http"
    location: Literal["host", "name"] = "host"
    location_hint: str = ""
    key_env: tuple[str, ...] | str = ()
    key_required: bool = False
    options: tuple[Option, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    configure: Configure | None = field(default=None, repr=False, compare=False)
    default_address: Callable[[Mapping[str, str]], tuple[str, int | None]] | None = field(
        default=None, repr=False, compare=False
    )
    embeddings: bool = False
    embeddings_codec: ModuleType | object | str | None = None
    module: str = field(default="", compare=False)

    @property
    def kind(self) -> Literal["http", "engine"]:
        """``engine`` for an in-process engine, else ``http``."""
        return "engine" if self.async_engine or self.sync_engine else "http"

    @property
    def key_vars(self) -> tuple[str, ...]:
        """The conventional key variables, as a tuple."""
        return (self.key_env,) if isinstance(self.key_env, str) else self.key_env

    def option(self, name: str) -> Option | None:
        """The declared option ``name``, if any."""
        for option in self.options:
            if option.name == name:
                return option
        return None
