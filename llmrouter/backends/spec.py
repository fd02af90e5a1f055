"""The resolved form of one backend: :class:`BackendSpec`, its :class:`Timeouts`, and the
:class:`Secret` that holds its key. Pure values, no I/O; ``llmrouter.config`` builds them from
URLs and the environment, codecs and engines read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmrouter.errors import ConfigError

__all__ = ["BackendSpec", "Secret", "Timeouts"]


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
class BackendSpec:
    """One backend, fully resolved from its URL and the environment.

    Attributes:
        kind: the module that declares the backend (``llmrouter.backends.openai_compat``).
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
        options: the backend's own query options (validated strings, defaults filled in).
        embedding_space: the embedding space this backend's vectors belong to
            (``?embedding_space=``): backends that declare the same one may take over each
            other's embeddings requests although their model names differ.
        embed_batch: at most this many inputs per embeddings request (``?embed_batch=``),
            below the backend's own limit.
        instance: a ready-made backend object given to ``Client(backends=[...])``, used as is.
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
    embedding_space: str | None = None
    embed_batch: int | None = None
    instance: object | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return self.name
