"""The public backend API: what a backend (built-in or plugin) is made of.

One module per wire protocol, each a sans-IO codec or an in-process engine adapter, declared by
a :class:`BackendDeclaration` beside its code. Modules load lazily: a backend is imported only
when a URL names its scheme. Writing one: ``docs/plugins.md``.

Stable names (see the promise in ``docs/plugins.md``):

* declaring: :class:`BackendDeclaration`, :class:`Option`, :class:`Capabilities`,
  :class:`URLParts`, :func:`register_backend`;
* what a backend receives: :class:`BackendSpec`, :class:`Timeouts`, :class:`Secret`,
  :class:`ChatRequest`, :class:`Deadline`;
* what an HTTP codec builds and returns: :class:`HTTPRequest`, the interfaces
  :class:`HTTPCodec` and :class:`ChunkDecoder`, :func:`error_from_status`,
  :func:`parse_retry_after`, :class:`SSEChunkDecoder`, the decoders :class:`SSEDecoder`,
  :class:`NDJSONDecoder` and :class:`EventStreamDecoder`, and :func:`sigv4_headers`;
* in-process engines: :class:`AsyncEngine` and :class:`Engine`;
* the response types live in :mod:`llmrouter.types`, the errors in :mod:`llmrouter.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmrouter._lazy import lazy_attributes
from llmrouter.backends.declaration import BackendDeclaration, Capabilities, Option, URLParts
from llmrouter.backends.registry import register_backend, unregister_backend
from llmrouter.backends.spec import BackendSpec, Secret, Timeouts

__all__ = [
    "AsyncEngine",
    "BackendDeclaration",
    "BackendSpec",
    "Capabilities",
    "ChatRequest",
    "ChunkDecoder",
    "Deadline",
    "Engine",
    "EventStreamDecoder",
    "HTTPCodec",
    "HTTPRequest",
    "NDJSONDecoder",
    "Option",
    "SSEChunkDecoder",
    "SSEDecoder",
    "Secret",
    "Timeouts",
    "URLParts",
    "error_from_status",
    "parse_retry_after",
    "register_backend",
    "sigv4_headers",
    "unregister_backend",
]

# Names whose modules cost more than a dataclass: loaded on first use.
_LAZY = {
    "AsyncEngine": "llmrouter.backends.interfaces",
    "Engine": "llmrouter.backends.interfaces",
    "HTTPCodec": "llmrouter.backends.interfaces",
    "ChunkDecoder": "llmrouter.backends.interfaces",
    "ChatRequest": "llmrouter._request",
    "Deadline": "llmrouter.policy",
    "HTTPRequest": "llmrouter._http",
    "error_from_status": "llmrouter._status",
    "parse_retry_after": "llmrouter._status",
    "SSEDecoder": "llmrouter._decoders",
    "NDJSONDecoder": "llmrouter._decoders",
    "SSEChunkDecoder": "llmrouter.backends._stream",
    "EventStreamDecoder": "llmrouter.backends._eventstream",
    "sigv4_headers": "llmrouter.backends.sigv4",
}

if TYPE_CHECKING:
    from llmrouter._decoders import NDJSONDecoder, SSEDecoder
    from llmrouter._http import HTTPRequest
    from llmrouter._request import ChatRequest
    from llmrouter._status import error_from_status, parse_retry_after
    from llmrouter.backends._eventstream import EventStreamDecoder
    from llmrouter.backends._stream import SSEChunkDecoder
    from llmrouter.backends.interfaces import AsyncEngine, ChunkDecoder, Engine, HTTPCodec
    from llmrouter.backends.sigv4 import sigv4_headers
    from llmrouter.policy import Deadline


__getattr__ = lazy_attributes("llmrouter.backends", globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
