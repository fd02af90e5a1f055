"""Configured secrets removed from text that came back from a server or a transport (pure).

Servers echo keys: OpenAI's 401 says ``Incorrect API key provided: sk-...``, proxies echo the
whole ``Authorization`` header, and an HTTP library that refuses a header value quotes it
(httpx: ``Illegal header value b'Bearer sk-...\\r'``). Before such text enters an error (and
from there a log line, an event, the route, the CLI's output or the gateway's answer), every
configured secret is cut from it:

* the secret itself, and its URL-encoded and backslash-escaped forms;
* any run of more than :data:`KEPT` characters of it that touches its start or its end (a
  server's own ``sk-...abcd`` masking keeps at most a few characters and stays).

:func:`scrub_error` applies that to an exception in place: its message, ``args``, ``body``
(recursively), ``request_id`` and ``error_type``; a chained exception whose text would still
show a secret is detached (its text cannot be rewritten).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

__all__ = ["KEPT", "MASK", "header_secrets", "scrub", "scrub_error", "scrub_value"]

MASK = "[redacted]"
# The longest run of a secret's first or last characters that may stay in a text.
KEPT = 8
# Shorter values are placeholders ("x", "none"), not secrets; cutting them would garble text.
_MIN_SECRET = 4
# Request headers whose values are credentials whatever their length or shape.
_SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "x-amz-security-token",
        "cookie",
    }
)

# Words in a header's name that say its value is a credential (x-goog-api-key, x-auth-token).
_SENSITIVE_WORDS = ("key", "token", "secret", "auth", "signature", "password", "session")

_SEPARATORS = re.compile(r"[\s,]+")

E = TypeVar("E", bound=BaseException)


def _forms(secret: str) -> set[str]:
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    forms.add(secret.encode("unicode_escape").decode("ascii"))
    forms.add(secret.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace"))
    return {f for f in forms if len(f) >= _MIN_SECRET}


def _cut_ends(text: str, secret: str) -> str:
    """Cut runs of more than KEPT characters of ``secret`` that start at its start or end at
    its end."""
    if len(secret) <= KEPT:
        return text
    head, tail = secret[: KEPT + 1], secret[-(KEPT + 1) :]
    spans: list[tuple[int, int]] = []
    start = text.find(head)
    while start != -1:
        end = start + len(head)
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        spans.append((start, end))
        start = text.find(head, end)
    start = text.find(tail)
    while start != -1:
        end = start + len(tail)
        begin, k = start, len(secret) - len(tail)
        while begin > 0 and k > 0 and text[begin - 1] == secret[k - 1]:
            begin, k = begin - 1, k - 1
        spans.append((begin, end))
        start = text.find(tail, end)
    if not spans:
        return text
    spans.sort()
    merged: list[tuple[int, int]] = []
    for begin, end in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    out, last = [], 0
    for begin, end in merged:
        out.append(text[last:begin])
        out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any of ``secrets`` (see the module docstring for what is cut)."""
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        for form in sorted(_forms(secret), key=len, reverse=True):
            if form in text:
                text = text.replace(form, MASK)
            text = _cut_ends(text, form)
    return text


def scrub_value(value: Any, secrets: Iterable[str]) -> Any:
    """A parsed JSON body (or any nesting of dicts, lists and strings) with secrets cut."""
    secrets = list(secrets)
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {scrub_value(k, secrets): scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub_value(v, secrets) for v in value)
    return value


def header_secrets(headers: Mapping[str, str], *, every: bool = False) -> list[str]:
    """The credentials in a request's headers (see :func:`_credentials`): those of credential
    headers (by name), or with ``every`` those of all headers (for a transport's complaint
    about a header, which quotes the value whatever it is)."""
    found: list[str] = []
    for name, value in headers.items():
        if not isinstance(value, str):
            continue
        lowered = name.lower()
        if (
            every
            or lowered in _SENSITIVE_HEADERS
            or any(word in lowered for word in _SENSITIVE_WORDS)
        ):
            found.extend(_credentials(value))
    return found


def _credentials(value: str) -> list[str]:
    """The parts of a header value that are credentials: the value itself when it is one
    token, else its tokens' values (``Bearer sk-...`` gives ``sk-...``; SigV4's ``Credential=A,
    Signature=B`` gives ``A`` and ``B``, not ``Signature=``, whose ends are plain words)."""
    tokens = _SEPARATORS.split(value.strip())
    if len(tokens) == 1:
        return tokens
    found = []
    for token in tokens:
        _, equals, tail = token.partition("=")
        token = tail if equals else token
        if len(token) > KEPT:
            found.append(token)
    return found


def _shows(exc: BaseException, secrets: list[str]) -> bool:
    try:
        text = f"{exc!s} {exc!r} {exc.args!r}"
    except Exception:  # a broken __str__ shows nothing, but keep nothing we cannot check
        return True
    return scrub(text, secrets) != text


def scrub_error(exc: E, secrets: Iterable[str]) -> E:
    """``exc`` with ``secrets`` cut from its text and fields, in place; returned for ``raise``."""
    secrets = [s for s in secrets if s and len(s) >= _MIN_SECRET]
    if not secrets:
        return exc
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        _scrub_fields(current, secrets)
        for link in ("__cause__", "__context__"):
            chained = getattr(current, link)
            if (
                chained is not None
                and not _scrub_fields(chained, secrets)
                and _shows(chained, secrets)
            ):
                setattr(current, link, None)
                current.__suppress_context__ = True
        current = current.__cause__ or current.__context__
    return exc


def _scrub_fields(exc: BaseException, secrets: list[str]) -> bool:
    """Rewrite ``exc``'s text and fields; False when it is not ours to rewrite."""
    from llmrouter.errors import LLMRouterError

    if not isinstance(exc, LLMRouterError):
        return False
    exc.args = tuple(scrub_value(a, secrets) for a in exc.args)
    for name in ("message", "body", "request_id", "error_type", "partial_text", "raw"):
        value = getattr(exc, name, None)
        if value is not None:
            with contextlib.suppress(AttributeError):  # a read-only property
                setattr(exc, name, scrub_value(value, secrets))
    for error in getattr(exc, "errors", None) or ():
        if isinstance(error, BaseException) and error is not exc:
            scrub_error(error, secrets)
    return True
