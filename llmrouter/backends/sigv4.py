"""AWS credentials and SigV4 signing for AWS codecs (SageMaker, Bedrock, plugins): botocore,
imported on first use (the ``sagemaker`` or ``bedrock`` extra).

Credentials come from botocore's standard chain, are resolved once per profile and cached
(botocore refreshes temporary ones itself). Resolution and refresh may do I/O: ``prepare`` is
the blocking step a driver runs off the event loop, ``needs_prepare`` the cheap check.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from llmrouter.config import BackendSpec
from llmrouter.errors import BackendConnectionError, ConfigError, MissingDependencyError

__all__ = [
    "SIGNING_NAME",
    "needs_prepare",
    "prepare",
    "reset_credentials",
    "session",
    "signed",
    "sigv4_headers",
]

SIGNING_NAME = "sagemaker"  # sagemaker.md: signing name "sagemaker", not "runtime.sagemaker"


def _options(spec: BackendSpec) -> dict[str, str]:
    return dict(spec.options)


_lock = threading.Lock()
_sessions: dict[str | None, Any] = {}
_credentials: dict[str | None, Any] = {}


def _botocore(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependencyError("botocore", "sagemaker", "AWS SigV4 signing") from None


def session(profile: str | None) -> Any:
    with _lock:
        session = _sessions.get(profile)
        if session is None:
            session = _botocore("botocore.session").Session(profile=profile)
            _sessions[profile] = session
        return session


def _resolve_credentials(spec: BackendSpec) -> Any:
    profile = _options(spec).get("profile") or None
    cached = _credentials.get(profile)
    if cached is not None:
        return cached
    botocore_session = session(profile)
    exceptions = _botocore("botocore.exceptions")
    with _lock:  # one resolution at a time: the chain may read files or call IMDS
        cached = _credentials.get(profile)
        if cached is not None:
            return cached
        try:
            credentials = botocore_session.get_credentials()
        except exceptions.BotoCoreError as exc:
            raise ConfigError(f"{spec.name}: could not load AWS credentials: {exc}") from None
        if credentials is None:
            raise ConfigError(
                f"{spec.name}: no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or ?profile=), or run where a role "
                "provides them (ECS/EKS/EC2); botocore's standard chain was searched"
            )
        _credentials[profile] = credentials
        return credentials


def _frozen(spec: BackendSpec) -> Any:
    credentials = _resolve_credentials(spec)
    try:
        # Refreshable credentials refresh here when they are about to expire (may do I/O).
        return credentials.get_frozen_credentials()
    except Exception as exc:  # botocore's refresh errors: the credential source failed
        raise BackendConnectionError(
            f"could not refresh AWS credentials: {type(exc).__name__}: {exc}", backend=spec.name
        ) from None


def prepare(spec: BackendSpec) -> None:
    """Resolve (first call) and refresh (when near expiry) this backend's AWS credentials.

    Blocking, and may do I/O; thread-safe. A driver can run it in a worker thread before
    calling ``build_*`` so that signing on the event loop finds fresh credentials in memory.
    """
    _frozen(spec)


def needs_prepare(spec: BackendSpec) -> bool:
    """Whether signing now could do I/O: the credentials are not resolved yet, or they are
    refreshable and due (botocore's advisory window). Cheap; no I/O."""
    credentials = _credentials.get(_options(spec).get("profile") or None)
    if credentials is None:
        return True
    refresh_needed = getattr(credentials, "refresh_needed", None)
    return bool(refresh_needed()) if callable(refresh_needed) else False


def reset_credentials() -> None:
    """Forget the cached botocore sessions and credentials (after changing AWS_PROFILE, keys
    or config files in this process; tests use it)."""
    with _lock:
        _sessions.clear()
        _credentials.clear()


def sigv4_headers(
    spec: BackendSpec,
    url: str,
    headers: dict[str, str],
    body: bytes,
    region: str,
    service: str,
    method: str = "POST",
) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (temporary credentials) and
    ``Authorization``, signed for ``service`` over the method, path, body and every header
    given. Credentials come from botocore's chain (``?profile=`` picks a profile); call
    :func:`prepare` off the event loop first when :func:`needs_prepare` says so."""
    frozen = _frozen(spec)
    awsrequest = _botocore("botocore.awsrequest")
    auth = _botocore("botocore.auth")
    request = awsrequest.AWSRequest(method=method, url=url, data=body, headers=headers)
    auth.SigV4Auth(frozen, service, region).add_auth(request)
    return {str(k): str(v) for k, v in request.headers.items()}


def signed(
    spec: BackendSpec, url: str, headers: dict[str, str], body: bytes, region: str
) -> dict[str, str]:
    """SageMaker's signature (:data:`SIGNING_NAME`): :func:`sigv4_headers` for it."""
    return sigv4_headers(spec, url, headers, body, region, SIGNING_NAME)
