"""OAuth access tokens for ``vertex://``: Application Default Credentials through google-auth
(the ``vertex`` extra, imported on first use), or a token read from a variable.

* ``?token_env=VAR``: the token is the value of ``VAR``, read when a request is built (for
  tokens minted elsewhere, ``gcloud auth print-access-token``, and for tests); no google-auth.
* Otherwise ADC (``google.auth.default`` with the ``cloud-platform`` scope: the
  ``GOOGLE_APPLICATION_CREDENTIALS`` file, gcloud's user credentials, the metadata server),
  loaded once per process and refreshed when google-auth says the token is no longer valid.
  Loading and refreshing may do I/O: :func:`prepare` does both (the driver runs it in a worker
  thread); :func:`needs_prepare` is the cheap check; building a request only reads the token.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from llmrouter.backends import BackendSpec
from llmrouter.errors import BackendConnectionError, ConfigError, MissingDependencyError

__all__ = ["SCOPES", "needs_prepare", "prepare", "reset_credentials", "token"]

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)

_lock = threading.Lock()
_credentials: list[Any] = []  # at most one: ADC is per process


def _google(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependencyError(
            "google-auth", "vertex", "Google Application Default Credentials"
        ) from None


def _token_env(spec: BackendSpec) -> str | None:
    return dict(spec.options).get("token_env") or None


def needs_prepare(spec: BackendSpec) -> bool:
    """ADC are not loaded yet, or their token is missing or expiring. Cheap; no I/O."""
    if _token_env(spec):
        return False
    if not _credentials:
        return True
    return not bool(getattr(_credentials[0], "valid", False))


def prepare(spec: BackendSpec) -> None:
    """Load ADC (first call) and refresh the token when it is not valid. Blocking."""
    if _token_env(spec):
        return
    with _lock:
        if not _credentials:
            auth = _google("google.auth")
            try:
                credentials, _project = auth.default(scopes=list(SCOPES))
            except auth.exceptions.DefaultCredentialsError as exc:
                raise ConfigError(
                    f"{spec.name}: no Google Application Default Credentials: set "
                    "GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default "
                    f"login`, or pass ?token_env=VAR ({exc})"
                ) from None
            _credentials.append(credentials)
        credentials = _credentials[0]
        if credentials.valid:
            return
        requests = _google("google.auth.transport.requests")
        try:
            credentials.refresh(requests.Request())
        except Exception as exc:  # google-auth's refresh errors: the token source failed
            raise BackendConnectionError(
                f"could not refresh Google credentials: {type(exc).__name__}: {exc}"[:300],
                backend=spec.name,
            ) from None


def token(spec: BackendSpec) -> str:
    """The bearer token for a request (after :func:`prepare`)."""
    var = _token_env(spec)
    if var:
        value = os.environ.get(var, "").strip()
        if not value:
            raise ConfigError(f"{spec.name}: environment variable {var} (token_env) is unset")
        return value
    if needs_prepare(spec):
        prepare(spec)  # the sync client, or a token that expired since the driver checked
    minted = getattr(_credentials[0], "token", None)
    if not isinstance(minted, str) or not minted:
        raise BackendConnectionError("Google credentials gave no access token", backend=spec.name)
    return minted


def reset_credentials() -> None:
    """Forget the loaded ADC (tests; after changing GOOGLE_APPLICATION_CREDENTIALS)."""
    with _lock:
        _credentials.clear()
