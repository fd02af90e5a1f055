"""The openai SDK's constructor arguments, resolved onto a chain and per-call defaults (pure).

``Client(base_url=..., api_key=...)`` means what ``openai.OpenAI(...)`` means:

* ``base_url`` (else ``OPENAI_BASE_URL``) names one OpenAI-compatible server; given together
  with ``url=``/``backends=`` it is a :class:`ConfigError` (one names a server, the other a
  chain: the chain's URLs say where each key and server is).
* ``api_key`` (else ``OPENAI_API_KEY``), ``organization`` (else ``OPENAI_ORG_ID``) and
  ``project`` (else ``OPENAI_PROJECT_ID``) go with that server; with a chain they apply when the
  chain is one backend (its key and headers), and are a :class:`ConfigError` otherwise.
* With none of ``base_url``/``url``/``backends`` and no URL in the environment, an ``api_key``,
  ``organization`` or ``project`` given in code means OpenAI's own API, as in the SDK; with none
  of them the default stays llmrouter's (``LLMROUTER_URL``, ``OPENAI_BASE_URL``, the embedded
  model).

``timeout``, ``max_retries``, ``default_headers`` and ``default_query`` become
:class:`CallDefaults` applied to every call, so that ``with_options`` can change them on a
copy that shares the backends (connections, breakers, loaded models).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmrouter._request import ChatRequest, check_query, split_timeout
from llmrouter.backends.spec import BackendSpec, Secret
from llmrouter.config import openai_headers, parse_backend, resolve_chain
from llmrouter.errors import ConfigError

__all__ = ["OPENAI_API", "CallDefaults", "call_defaults", "client_chain"]

OPENAI_API = "https://api.openai.com/v1"


def _config_error(message: str, param: str) -> ConfigError:
    return ConfigError(message)


@dataclass(frozen=True, slots=True)
class CallDefaults:
    """What every call of a client carries unless the call says otherwise."""

    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    max_retries: int | None = None

    def apply(self, request: ChatRequest) -> ChatRequest:
        """``request`` with the defaults filled in where it set nothing (in place)."""
        if self.headers:
            request.extra_headers = {**self.headers, **request.extra_headers}
        if self.query:
            request.extra_query = {**self.query, **request.extra_query}
        if request.timeout is None:
            request.timeout = self.timeout
        if request.connect_timeout is None:
            request.connect_timeout = self.connect_timeout
        if request.read_timeout is None:
            request.read_timeout = self.read_timeout
        if request.max_retries is None:
            request.max_retries = self.max_retries
        return request

    @property
    def empty(self) -> bool:
        return self == _EMPTY


_EMPTY = CallDefaults()


def call_defaults(
    *,
    timeout: Any = None,
    max_retries: int | None = None,
    default_headers: Mapping[str, str] | None = None,
    default_query: Mapping[str, object] | None = None,
) -> CallDefaults:
    """The per-call defaults from the constructor's arguments, checked (:class:`ConfigError`)."""
    total, connect, read = split_timeout(timeout, _config_error)
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ConfigError(f"max_retries: expected a whole number >= 0, got {max_retries!r}")
    headers: dict[str, str] = {}
    if default_headers is not None:
        if not isinstance(default_headers, Mapping):
            raise ConfigError("default_headers: expected a dict of header names to values")
        for name, value in default_headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ConfigError("default_headers: names and values must be strings")
            clean = value.strip(" \t")
            if not (clean.isascii() and clean.isprintable()) or not name.isascii():
                # The value is never shown: it may be a credential.
                raise ConfigError(
                    f"default_headers[{name!r}]: the value holds control characters or "
                    "non-ASCII text and cannot be sent in HTTP"
                )
            headers[name] = clean
    return CallDefaults(
        headers=headers,
        query=check_query(default_query, _config_error, "default_query"),
        timeout=total,
        connect_timeout=connect,
        read_timeout=read,
        max_retries=max_retries,
    )


def client_chain(
    url: str | None,
    backends: Any,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    organization: str | None = None,
    project: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[list[BackendSpec]]:
    """The chain of a client built with these arguments (see the module docstring)."""
    env = os.environ if env is None else env
    if url is not None and backends is not None:
        raise ConfigError("give either url or backends, not both")
    chain_given: Any = backends if backends is not None else url
    if base_url is not None:
        if chain_given is not None:
            raise ConfigError(
                "base_url= names one OpenAI-compatible server and url=/backends= a chain of "
                "backends: give one of them (a chain can hold that server as "
                "'openai+http://host:port/v1', with its key in the environment)"
            )
        return [[_openai_server(str(base_url), "base_url", api_key, organization, project, env)]]
    in_code = api_key is not None or organization is not None or project is not None
    if chain_given is None and not env.get("LLMROUTER_URL", "").strip():
        env_base = env.get("OPENAI_BASE_URL", "").strip()
        if env_base or in_code:
            where = "OPENAI_BASE_URL" if env_base else "the default base URL"
            spec = _openai_server(
                env_base or OPENAI_API, where, api_key, organization, project, env
            )
            return [[spec]]
    chain = resolve_chain(chain_given, env)
    if not in_code:
        return chain
    specs = [spec for group in chain for spec in group]
    if len(specs) != 1:
        raise ConfigError(
            f"api_key=, organization= and project= apply to one backend, and this chain has "
            f"{len(specs)}: give each backend its key in the environment or with "
            "'?api_key_env=VARIABLE' on its URL"
        )
    (spec,) = specs
    if spec.instance is not None or not spec.base_url:
        raise ConfigError(
            f"{spec.name}: api_key=, organization= and project= apply to HTTP backends only"
        )
    return [[_with_openai_args(spec, api_key, organization, project, "api_key")]]


def _openai_server(
    base_url: str,
    where: str,
    api_key: str | None,
    organization: str | None,
    project: str | None,
    env: Mapping[str, str],
) -> BackendSpec:
    if base_url.split("://", 1)[0].lower() not in ("http", "https"):
        raise ConfigError(f"{where}: expected an http:// or https:// URL")
    if api_key is None and not env.get("OPENAI_API_KEY", "").strip():
        raise ConfigError(
            "the api_key client option must be set, as in the openai SDK: pass api_key= or set "
            "OPENAI_API_KEY (any value for servers that ignore it)"
        )
    spec = parse_backend(base_url, {})
    key_where = "api_key" if api_key is not None else "OPENAI_API_KEY"
    return _with_openai_args(
        spec,
        api_key if api_key is not None else env["OPENAI_API_KEY"],
        organization if organization is not None else env.get("OPENAI_ORG_ID") or None,
        project if project is not None else env.get("OPENAI_PROJECT_ID") or None,
        key_where,
    )


def _with_openai_args(
    spec: BackendSpec,
    api_key: str | None,
    organization: str | None,
    project: str | None,
    key_where: str,
) -> BackendSpec:
    headers = [
        (k, v) for k, v in spec.headers if k not in ("OpenAI-Organization", "OpenAI-Project")
    ]
    extra = {"OPENAI_ORG_ID": organization or "", "OPENAI_PROJECT_ID": project or ""}
    for name, value in (("organization", organization), ("project", project)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {type(value).__name__}")
    headers.extend(openai_headers(extra))
    changes: dict[str, Any] = {"headers": tuple(headers)}
    if api_key is not None:
        if not isinstance(api_key, str):
            raise ConfigError(f"api_key: expected a string, got {type(api_key).__name__}")
        changes["api_key"] = Secret.load(api_key, key_where)
    return dataclasses.replace(spec, **changes)
