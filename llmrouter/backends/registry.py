"""Which backend serves which URL scheme: the built-ins, backends registered in code, and
plugins found through the ``llmrouter.backends`` entry-point group.

Lookup order for a scheme: registered in code (:func:`register_backend`), then built-in, then
installed plugins. Plugin metadata is read only when a URL names a scheme that neither knows,
and at most once per process, so ``import llmrouter`` and built-in URLs never pay for it.

A plugin distribution declares::

    [project.entry-points."llmrouter.backends"]
    myscheme = "my_pkg.backend"

and ``my_pkg.backend`` holds ``BACKEND = BackendDeclaration(scheme="myscheme", ...)`` (or
``BACKENDS = (...)``). Every failure to load one is a :class:`ConfigError` that names the
distribution and what is wrong, never a traceback from inside it.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Any, NamedTuple

from llmrouter.backends.declaration import BackendDeclaration
from llmrouter.errors import ConfigError

__all__ = [
    "BUILTIN_SCHEMES",
    "ENTRY_POINT_GROUP",
    "CODEC_NAMES",
    "async_engine_class",
    "codec_of",
    "declaration",
    "declarations_in",
    "embeddings_codec_of",
    "engine_class",
    "known_schemes",
    "plugin_schemes",
    "register_backend",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "llmrouter.backends"

# Scheme -> the module that declares it: an index, so that a URL loads only its own backend.
# Each module's own BACKEND/BACKENDS is the declaration (tests check the two agree).
BUILTIN_SCHEMES: dict[str, str] = {
    "http": "llmrouter.backends.openai_compat",
    "https": "llmrouter.backends.openai_compat",
    "openai": "llmrouter.backends.openai_compat",
    "vllm": "llmrouter.backends.openai_compat",
    "llamacpp": "llmrouter.backends.openai_compat",
    "tgi": "llmrouter.backends.tgi",
    "tei": "llmrouter.backends.tei",
    "ollama": "llmrouter.backends.ollama",
    "anthropic": "llmrouter.backends.anthropic",
    "azure": "llmrouter.backends.azure",
    "sagemaker": "llmrouter.backends.sagemaker",
    "gemini": "llmrouter.backends.gemini",
    "vertex": "llmrouter.backends.gemini",
    "groq": "llmrouter.backends.presets",
    "together": "llmrouter.backends.presets",
    "mistral": "llmrouter.backends.presets",
    "deepseek": "llmrouter.backends.presets",
    "openrouter": "llmrouter.backends.presets",
    "fireworks": "llmrouter.backends.presets",
    "xai": "llmrouter.backends.presets",
    "cerebras": "llmrouter.backends.presets",
    "perplexity": "llmrouter.backends.presets",
    "gemini-openai": "llmrouter.backends.presets",
    "bedrock": "llmrouter.backends.bedrock",
    "local": "llmrouter.backends.llamacpp",
    "vllm+local": "llmrouter.backends.vllm_engine",
}

# What an HTTP codec must define (llmrouter.backends.HTTPCodec).
CODEC_NAMES = (
    "build_chat",
    "parse_chat",
    "ChunkDecoder",
    "map_error",
    "build_models",
    "parse_models",
    "build_health",
)


class _Plugin(NamedTuple):
    distribution: str
    value: str  # "module" or "module:attr"


_lock = threading.RLock()
_registered: dict[str, BackendDeclaration] = {}
_loaded: dict[str, BackendDeclaration] = {}
_plugins: dict[str, list[_Plugin]] | None = None


def declarations_in(module: ModuleType | Any, where: str) -> list[BackendDeclaration]:
    """The declarations a module (or object) holds, as ``BACKEND`` or ``BACKENDS``."""
    found = getattr(module, "BACKENDS", None)
    if found is None:
        single = getattr(module, "BACKEND", None)
        found = () if single is None else (single,)
    if isinstance(found, BackendDeclaration):
        found = (found,)
    decls = list(found) if isinstance(found, Iterable) else []
    if not decls or not all(isinstance(d, BackendDeclaration) for d in decls):
        raise ConfigError(
            f"{where}: expected BACKEND = llmrouter.backends.BackendDeclaration(...) "
            "(or BACKENDS = (...)) in the module"
        )
    if isinstance(module, ModuleType):
        decls = [
            dataclasses.replace(
                d,
                codec=module if d.kind == "http" and d.codec is None else d.codec,
                module=d.module or module.__name__,
            )
            for d in decls
        ]
    return decls


def _check(decl: BackendDeclaration, where: str) -> BackendDeclaration:
    if decl.kind == "http":
        codec = codec_of(decl, where)
        missing = [name for name in CODEC_NAMES if not hasattr(codec, name)]
        if missing:
            raise ConfigError(f"{where}: the codec for {decl.scheme}:// lacks {', '.join(missing)}")
    return decl


def register_backend(
    backend: BackendDeclaration | ModuleType | str, *, replace: bool = False
) -> list[BackendDeclaration]:
    """Register a backend in code (apps, tests): a declaration, a module holding
    ``BACKEND``/``BACKENDS``, or such a module's import path.

    Args:
        backend: what to register.
        replace: allow taking over a scheme that is built in or already registered.

    Returns:
        The declarations registered.

    Raises:
        ConfigError: the scheme is taken (without ``replace=True``) or the declaration is
            incomplete.
    """
    if isinstance(backend, str):
        backend = _import(backend, f"register_backend({backend!r})")
    if isinstance(backend, BackendDeclaration):
        decls = [backend]
        if backend.kind == "http" and backend.codec is None:
            raise ConfigError(f"register_backend: {backend.scheme}:// has no codec and no engine")
    else:
        decls = declarations_in(backend, f"register_backend({getattr(backend, '__name__', '')})")
    with _lock:
        for decl in decls:
            scheme = decl.scheme.lower()
            taken = scheme in _registered or scheme in BUILTIN_SCHEMES
            if taken and not replace:
                raise ConfigError(
                    f"register_backend: {scheme}:// is already served by "
                    f"{'a built-in backend' if scheme in BUILTIN_SCHEMES else 'a registered one'}"
                    "; pass replace=True to take it over"
                )
            _registered[scheme] = _check(decl, f"register_backend({scheme})")
    return decls


def unregister_backend(scheme: str) -> None:
    """Forget a backend registered in code (tests)."""
    with _lock:
        _registered.pop(scheme.lower(), None)


def _import(path: str, where: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    except Exception as exc:  # a plugin's own failure: say whose, without its traceback
        raise ConfigError(
            f"{where}: importing {path} failed: {type(exc).__name__}: {exc}"
        ) from None


def codec_of(decl: BackendDeclaration, where: str = "") -> Any:
    """The codec object of an HTTP backend's declaration (imported on first use)."""
    codec = decl.codec
    if isinstance(codec, str):
        return _import(codec, where or f"{decl.scheme}://")
    return codec


def embeddings_codec_of(decl: BackendDeclaration) -> Any:
    """The embeddings codec of an HTTP backend that embeds (``decl.embeddings_codec``, else
    its chat codec), imported on first use; ``None`` for a backend that does not embed."""
    if not decl.embeddings:
        return None
    codec = decl.embeddings_codec
    if codec is None:
        return codec_of(decl)
    if isinstance(codec, str):
        return _import(codec, f"{decl.scheme}://")
    return codec


def _engine(decl: BackendDeclaration, value: type | str | None, flavour: str) -> type:
    if value is None:
        raise ConfigError(f"{decl.scheme}:// has no {flavour} engine: use the other client")
    if isinstance(value, str):
        loaded: type = _import(value, f"{decl.scheme}://")
        return loaded
    return value


def async_engine_class(decl: BackendDeclaration) -> type:
    """The in-process engine class the async client builds for this declaration."""
    return _engine(decl, decl.async_engine, "async")


def engine_class(decl: BackendDeclaration) -> type:
    """The in-process engine class the sync client builds for this declaration."""
    return _engine(decl, decl.sync_engine, "sync")


def _read_plugins() -> dict[str, list[_Plugin]]:
    """Every installed plugin's schemes, read once per process."""
    global _plugins
    with _lock:
        if _plugins is None:
            from importlib.metadata import entry_points

            found: dict[str, list[_Plugin]] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
                found.setdefault(ep.name.lower(), []).append(_Plugin(dist, ep.value))
            _plugins = found
        return _plugins


def plugin_schemes() -> list[str]:
    """The schemes installed plugins declare (reads entry-point metadata once)."""
    return sorted(_read_plugins())


def known_schemes(*, plugins: bool = False) -> list[str]:
    """The built-in schemes and those registered in code; with ``plugins``, installed plugins'."""
    names = set(BUILTIN_SCHEMES) | set(_registered)
    if plugins:
        names |= set(_read_plugins())
    return sorted(names)


def _load_plugin(scheme: str, claims: list[_Plugin]) -> BackendDeclaration:
    if len(claims) > 1:
        names = " and ".join(f"{c.distribution} ({c.value})" for c in claims)
        raise ConfigError(
            f"{scheme}:// is claimed by more than one installed plugin: {names}; "
            "uninstall one of them"
        )
    (claim,) = claims
    where = f"plugin {claim.distribution} (entry point {scheme} = {claim.value!r})"
    target = _import(claim.value, where)
    for decl in declarations_in(target, where):
        if decl.scheme.lower() == scheme:
            return _check(decl, where)
    raise ConfigError(f"{where}: its module declares no {scheme}:// backend")


def _unknown(scheme: str) -> ConfigError:
    builtin = ", ".join(s + "://" for s in sorted(set(BUILTIN_SCHEMES) | set(_registered)))
    installed = ", ".join(s + "://" for s in plugin_schemes() if s not in BUILTIN_SCHEMES)
    return ConfigError(
        f"unknown backend scheme {scheme + '://'!r}: expected one of {builtin} "
        f"(optionally with +http or +https); installed plugins: {installed or 'none'}"
    )


def declaration(scheme: str) -> BackendDeclaration:
    """The declaration that serves ``scheme`` (lower case, without ``+http``/``+https``).

    Raises:
        ConfigError: no backend serves it (the message lists the built-in and plugin
            schemes), or its plugin cannot be loaded.
    """
    found = _registered.get(scheme) or _loaded.get(scheme)
    if found is not None:
        return found
    with _lock:
        module_name = BUILTIN_SCHEMES.get(scheme)
        if module_name is not None:
            module = importlib.import_module(module_name)
            for decl in declarations_in(module, module_name):
                _loaded.setdefault(decl.scheme, decl)
            if scheme not in _loaded:
                raise ConfigError(
                    f"{module_name} declares no {scheme}:// backend"
                )  # pragma: no cover
            return _loaded[scheme]
        plugins = _read_plugins()
        shadowing = sorted(set(plugins) & set(BUILTIN_SCHEMES))
        if shadowing:
            claims = "; ".join(
                f"{c.distribution} claims {s}://" for s in shadowing for c in plugins[s]
            )
            raise ConfigError(
                f"installed plugins claim built-in schemes ({claims}): a plugin may not replace "
                "a built-in backend; rename the plugin's scheme, or register it in code with "
                "llmrouter.register_backend(..., replace=True)"
            )
        if scheme not in plugins:
            raise _unknown(scheme)
        decl = _load_plugin(scheme, plugins[scheme])
        _loaded[scheme] = decl
        return decl


def is_known(scheme: str) -> bool:
    """A backend serves ``scheme`` without reading plugin metadata (code or built-in)."""
    return scheme in _registered or scheme in BUILTIN_SCHEMES or scheme in _loaded
