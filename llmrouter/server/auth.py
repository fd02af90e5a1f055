"""API keys of the gateway: where they come from, and checking a request's bearer token.

Keys come from ``LLMROUTER_API_KEYS`` (comma-separated) and/or a keys file (one per line,
``#`` comments and blank lines ignored). An entry is ``key`` or ``key_id:key``; the key id is
what logs and metrics show. A bare key gets the id ``key-`` + the first 8 hex digits of its
SHA-256, stable across restarts and useless for recovering the key.

A presented token is compared with every key, always all of them, as SHA-256 digests through
:func:`hmac.compare_digest`: the time taken says nothing about which key nearly matched, nor
about their lengths. Keys are never logged, printed, or echoed in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from llmrouter.errors import ConfigError

__all__ = ["ANONYMOUS", "KeyStore"]

ANONYMOUS = "anonymous"  # the key id of every request when no keys are configured
ENV_VAR = "LLMROUTER_API_KEYS"


def _digest(secret: str) -> bytes:
    # surrogatepass: a header's undecodable bytes arrive as surrogates; they must not match,
    # nor raise.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _parse_entry(entry: str, where: str) -> tuple[str, str]:
    key_id, sep, key = entry.partition(":")
    if not sep:
        key = entry
        key_id = "key-" + hashlib.sha256(entry.encode()).hexdigest()[:8]
    key_id, key = key_id.strip(), key.strip()
    if not key or not key_id:
        raise ConfigError(f"{where}: expected 'key' or 'key_id:key', found an empty key or id")
    if any(c.isspace() for c in key):
        raise ConfigError(f"{where}: a key must not contain spaces")
    return key_id, key


class KeyStore:
    """The accepted API keys, by key id.

    Args:
        keys: ``(key_id, key)`` pairs.
    """

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[tuple[str, str]] = ()) -> None:
        self._digests: list[tuple[str, bytes]] = []
        seen: set[str] = set()
        for key_id, key in keys:
            if key_id in seen:
                raise ConfigError(f"API key id {key_id!r} is given twice")
            seen.add(key_id)
            self._digests.append((key_id, _digest(key)))

    @classmethod
    def load(
        cls,
        *,
        keys_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> KeyStore:
        """Keys from ``LLMROUTER_API_KEYS`` (in ``env``, default ``os.environ``) and a file.

        Raises:
            ConfigError: the file cannot be read, or an entry is malformed (the message names
                the line, never its content).
        """
        env = os.environ if env is None else env
        pairs: list[tuple[str, str]] = []
        for i, entry in enumerate((env.get(ENV_VAR) or "").split(","), 1):
            if entry.strip():
                pairs.append(_parse_entry(entry.strip(), f"{ENV_VAR} entry {i}"))
        if keys_file is not None:
            try:
                lines = Path(keys_file).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"--keys-file {keys_file}: {exc.strerror}") from exc
            for n, line in enumerate(lines, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    pairs.append(_parse_entry(line, f"{keys_file} line {n}"))
        return cls(pairs)

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (otherwise every request is allowed)."""
        return bool(self._digests)

    @property
    def key_ids(self) -> list[str]:
        """The configured key ids."""
        return [key_id for key_id, _ in self._digests]

    def identify(self, authorization: str | None) -> str | None:
        """The key id of an ``Authorization: Bearer <key>`` header, or ``None`` if no key matches.

        Without configured keys every request is :data:`ANONYMOUS`.
        """
        if not self._digests:
            return ANONYMOUS
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = _digest(token.strip())
        found: str | None = None
        for key_id, digest in self._digests:  # every key, every time: no early exit
            if hmac.compare_digest(presented, digest):
                found = key_id
        return found

    def __repr__(self) -> str:
        return f"KeyStore({len(self._digests)} key(s))"
