"""``llmrouter check`` and ``llmrouter models``: what the configured backends can do right now.

``check`` probes every backend of the chain on its own, not through failover: it lists the
backend's models (reachable? key accepted? model there?), then streams a tiny answer
(``max_tokens`` 8) to measure the time to first token and the decode speed. The exit status is
1 when any backend is down.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from llmrouter.cli.report import announce_loading, error, one_line, status
from llmrouter.cli.table import render, shorten

if TYPE_CHECKING:
    from llmrouter import Client
    from llmrouter.config import BackendSpec

__all__ = ["BackendReport", "add_parsers", "probe", "run_check", "run_models"]

_PROMPT = [{"role": "user", "content": "Say hello."}]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    check = sub.add_parser(
        "check",
        parents=[common],
        help="probe every backend: reachable, key, model, time to first token, tokens/s",
        description="Probe every configured backend on its own and print a table. "
        "Exit status 1 when any backend is down.",
    )
    check.add_argument("--url", help="backend URLs (default: LLMROUTER_URL, ...)")
    check.add_argument("--model", help="model to test where a backend does not pin one")
    check.add_argument(
        "--timeout", type=float, default=20.0, help="seconds per backend and step (20)"
    )
    check.add_argument("--max-tokens", type=int, default=8, help="tokens in the test answer (8)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")

    models = sub.add_parser(
        "models",
        parents=[common],
        help="list the models the backends serve (their union)",
        description="The union of every reachable backend's models, first backend first.",
    )
    models.add_argument("--url", help="backend URLs (default: LLMROUTER_URL, ...)")
    models.add_argument("--json", action="store_true", help="print the model list JSON")


@dataclass
class BackendReport:
    """What ``check`` found out about one backend (``None``: not known)."""

    backend: str
    ok: bool = False
    reachable: bool | None = None
    authenticated: bool | None = None
    model: str | None = None
    model_present: bool | None = None
    models: int | None = None
    ttft_ms: float | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    embeddings: bool | None = None  # the backend declares embeddings (client.embeddings)
    error: str | None = None
    note: str | None = None


def probe(
    spec: BackendSpec, model: str | None, timeout: float, max_tokens: int, *, debug: bool = False
) -> BackendReport:
    """Check one backend: list its models, then stream a tiny answer and time it."""
    from llmrouter import Client
    from llmrouter.backends import registry
    from llmrouter.errors import (
        AuthenticationError,
        BackendConnectionError,
        BackendTimeoutError,
        LLMRouterError,
    )
    from llmrouter.policy import RetryPolicy

    report = BackendReport(spec.name)
    if spec.instance is None:
        report.embeddings = registry.declaration(spec.scheme).embeddings
    hook = announce_loading([], debug=True) if debug else None
    if not spec.base_url:
        status(f"loading model {spec.name}\N{HORIZONTAL ELLIPSIS}")  # listing models loads it
    client = Client(
        backends=[spec], timeout=timeout, retry_policy=RetryPolicy(max_retries=0), on_event=hook
    )
    ids: list[str] | None
    with client:
        try:
            ids = [m.id for m in client.models.list().data]
        except (BackendConnectionError, BackendTimeoutError) as exc:
            report.reachable = False
            report.error = _describe(exc)
            return report
        except AuthenticationError as exc:
            report.reachable, report.authenticated = True, False
            report.error = _describe(exc)
            return report
        except LLMRouterError as exc:
            # Some servers have no model list (or a broken one): the test answer decides.
            ids = None
            report.error = _describe(exc)
            if not spec.base_url:
                return report
        else:
            report.reachable, report.models = True, len(ids)
            report.authenticated = True if spec.base_url else None
        wanted = spec.model or model
        if wanted is None and ids is not None and len(ids) == 1:
            wanted = ids[0]
        report.model = wanted
        if wanted is None and ids is not None:
            report.ok = True
            report.note = f"serves {_listing(ids)}; pass --model to test one"
            return report
        if wanted is not None and ids is not None:
            # Ollama lists "llama3.2:latest" for "llama3.2".
            report.model_present = wanted in ids or f"{wanted}:latest" in ids
        # Whether the model answers is the test: some servers list it under another name.
        _time_answer(client, report, None if spec.model else wanted, max_tokens)
        if not spec.base_url:
            report.authenticated = None  # in this process: no key involved
        if report.model_present is False:
            listed = f"{wanted!r} is not in the model list ({_listing(ids or [])})"
            if report.ok:
                report.note = f"{listed}, but it answered"
            else:
                report.error = f"{report.error}; {listed}"
        return report


def _time_answer(client: Client, report: BackendReport, model: str | None, max_tokens: int) -> None:
    from llmrouter.errors import AuthenticationError, LLMRouterError

    stamps: list[float] = []
    completion_tokens: int | None = None
    started = time.perf_counter()
    try:
        with client.chat.completions.create(
            messages=_PROMPT, model=model, max_tokens=max_tokens, temperature=0, stream=True
        ) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    stamps.append(time.perf_counter())
                if chunk.usage is not None and chunk.usage.completion_tokens:
                    completion_tokens = chunk.usage.completion_tokens
    except LLMRouterError as exc:
        if isinstance(exc, AuthenticationError):
            report.authenticated = False
        report.reachable = report.reachable or not _unreachable(exc)
        report.error = _describe(exc)
        return
    report.reachable = True
    if report.authenticated is None:
        report.authenticated = True
    report.ok, report.error = True, None
    if not stamps:
        report.note = "answered with no content"
        return
    report.ttft_ms = (stamps[0] - started) * 1000
    # Decode speed: the tokens after the first, over the time after the first. A content chunk
    # is a token unless the server reports how many it generated.
    report.tokens = completion_tokens or len(stamps)
    if report.tokens > 1 and stamps[-1] > stamps[0]:
        report.tokens_per_s = (report.tokens - 1) / (stamps[-1] - stamps[0])


def _unreachable(exc: BaseException) -> bool:
    from llmrouter.errors import BackendConnectionError, BackendTimeoutError

    return isinstance(exc, (BackendConnectionError, BackendTimeoutError))


def _describe(exc: BaseException) -> str:
    # A backend error's .message leaves out the backend's name, which the report already shows.
    message = getattr(exc, "message", None)
    return f"{type(exc).__name__}: {message if isinstance(message, str) else one_line(exc)}"


def _listing(ids: list[str]) -> str:
    shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    return f"{len(ids)} model(s): {shown}" if ids else "no models"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def run_check(args: argparse.Namespace) -> int:
    from llmrouter.config import resolve_chain

    specs = [spec for group in resolve_chain(args.url) for spec in group]
    status(f"checking {len(specs)} backend(s)\N{HORIZONTAL ELLIPSIS}")
    # In parallel: a backend that times out should not hold up the others' report.
    with ThreadPoolExecutor(max_workers=min(8, len(specs))) as pool:
        reports = list(
            pool.map(
                lambda s: probe(s, args.model, args.timeout, args.max_tokens, debug=args.debug),
                specs,
            )
        )
    down = sum(not r.ok for r in reports)
    if args.json:
        print(json.dumps({"ok": down == 0, "backends": [asdict(r) for r in reports]}, indent=2))
        return 1 if down else 0
    rows = [
        [
            r.backend,
            "ok" if r.ok else "DOWN",
            _yes_no(r.reachable),
            _yes_no(r.authenticated),
            shorten(r.model, 32) if r.model else "-",
            f"{r.ttft_ms:.0f} ms" if r.ttft_ms is not None else "-",
            f"{r.tokens_per_s:.1f}" if r.tokens_per_s is not None else "-",
            _yes_no(r.embeddings),
        ]
        for r in reports
    ]
    headers = ["BACKEND", "STATUS", "REACHABLE", "AUTH", "MODEL", "TTFT", "TOK/S", "EMBED"]
    print(render(headers, rows, right=(5, 6)))
    for r in reports:
        if r.error or r.note:
            print(f"  {r.backend}: {r.error or r.note}")
    print(f"{len(reports) - down} of {len(reports)} backend(s) up")
    return 1 if down else 0


def run_models(args: argparse.Namespace) -> int:
    from llmrouter import Client

    with Client(args.url) as client:
        for spec in client.backends:
            if not spec.base_url:  # listing an in-process backend's models loads it
                status(f"loading model {spec.name}\N{HORIZONTAL ELLIPSIS}")
        models = client.models.list()
    for attempt in models.route.attempts:
        if attempt.error is not None:
            error(f"warning: {attempt.describe()}")
    if args.json:
        print(json.dumps(models.model_dump(exclude_unset=True), indent=2))
        return 0
    for model in models.data:
        print(model.id)
    return 0
