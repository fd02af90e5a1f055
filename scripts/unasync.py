#!/usr/bin/env python3
"""Generate the sync twins of the async sources (``llmrouter/_async`` -> ``llmrouter/_sync``,
``tests/_async`` -> ``tests/_sync``) with a small rename table, as httpcore does.

    python scripts/unasync.py          # write the generated files
    python scripts/unasync.py --check  # exit 1 if any generated file is stale

Async-only code (hedging) is left out of the sync twin, as psycopg does: lines between
``# if async`` and ``# endif`` (markers on their own lines) are dropped, and so is the
``Args:`` entry of a docstring documenting an async-only parameter (:data:`ASYNC_ONLY_ARGS`).
Docstrings and comments are rewritten too (:data:`PROSE`), so that the sync files say what they
do: ``tests/test_unasync.py`` fails when a ``_sync/`` file's prose mentions async, await,
``AsyncOpenAI`` or aiohttp.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [("llmrouter/_async", "llmrouter/_sync"), ("tests/_async", "tests/_sync")]

# Whole-word renames. Keep this table small: names that differ are the API's twins.
RENAMES = {
    "AsyncClient": "Client",
    "AsyncCompletions": "Completions",
    "AsyncChat": "Chat",
    "AsyncEmbeddings": "Embeddings",
    "AsyncModels": "Models",
    "AsyncRawCompletions": "RawCompletions",
    "AsyncStreamingCompletions": "StreamingCompletions",
    "AsyncRawResponse": "RawResponse",
    "AsyncStreamedResponse": "StreamedResponse",
    "AsyncRouter": "Router",
    "AsyncStream": "Stream",
    "AsyncBackend": "Backend",
    "AsyncHTTPBackend": "HTTPBackend",
    "AsyncHTTPChunkSource": "HTTPChunkSource",
    "AsyncLocalBackend": "LocalBackend",
    "AsyncHTTPTransport": "SyncHTTPTransport",
    "HttpxAsyncTransport": "SyncHTTPTransport",
    "AsyncResponse": "SyncResponse",
    "AsyncChunkSource": "ChunkSource",
    "AsyncStreamOpener": "StreamOpener",
    "AsyncThreadIterator": "ThreadIterator",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",
    "_async": "_sync",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
    "aclose": "close",
    "aread": "read",
    "aiter_bytes": "iter_bytes",
    "athread_call": "thread_call",
    "asleep": "sleep",
    "aspawn": "spawn",
    "AsyncSleep": "Sleep",
    "athread_iter": "thread_iter",
    "AsyncLoopIterator": "LoopIterator",
    "aloop_call": "loop_call",
    "aloop_iter": "loop_iter",
    "AsyncVLLMBackend": "VLLMBackend",
    "AsyncFunctionBackend": "FunctionBackend",
    "AsyncEngine": "Engine",
    "async_engine_class": "engine_class",
    "async_client": "client",
    "amake_client": "make_client",
    "AsyncStateStore": "StateStore",
    "AsyncRedisState": "RedisState",
    "aopen_state": "open_state",
}
_WORDS = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, RENAMES), key=len, reverse=True)) + r")\b"
)
_KEYWORDS = [
    (re.compile(r"\basync def\b"), "def"),
    (re.compile(r"\basync with\b"), "with"),
    (re.compile(r"\basync for\b"), "for"),
    (re.compile(r"\bawait "), ""),
    (re.compile(r"^\s*@pytest\.mark\.asyncio\n", re.M), ""),
]


# Parameters that exist on the async twin only: their docstring ``Args:`` entries are dropped.
ASYNC_ONLY_ARGS = ("hedge",)
_ASYNC_ONLY_BLOCK = re.compile(r"^[ \t]*# if async[ \t]*\n(?:.*\n)*?[ \t]*# endif[ \t]*\n", re.M)
_MARKER = re.compile(r"^[ \t]*(# if async|# endif)[ \t]*$", re.M)
_ASYNC_ONLY_ARG = re.compile(
    r"^(?P<indent>[ \t]+)(?:" + "|".join(ASYNC_ONLY_ARGS) + r"): .*\n(?:(?P=indent)[ \t]+\S.*\n)*",
    re.M,
)
_DOCSTRING = re.compile(r'"""(?:.|\n)*?"""')

# Prose (docstrings, comments) that the renames and keywords above do not reach, as it reads
# once they are applied; longest phrase first.
PROSE = {
    "The I/O layer, written once with async/await; ``_sync/`` is generated from it.": (
        "The I/O layer's sync twin, generated from ``_async/`` by ``scripts/unasync.py``."
    ),
    "Tests written once with async/await; tests/_sync is generated from them.": (
        "The tests' sync twins, generated from tests/_async by scripts/unasync.py."
    ),
    ": in a worker thread\non the async client, in the caller's thread on the sync one.": (
        ": in the caller's\nthread."
    ),
    "this client awaits work there, so the async and the sync\nclient share one engine.": (
        "this client waits for work there, and shares\nthat one engine with every other client."
    ),
    "the async client does that work in\n"
    "        # a worker thread so the event loop never blocks.": (
        "this client does that work in\n        # the caller's thread."
    ),
    "openai.AsyncOpenAI": "openai.OpenAI",
    "An OpenAI-shaped async client": "An OpenAI-shaped client",
    "(default: aiohttp; ``SyncHTTPTransport`` for httpx2)": "(default: httpx2)",
}
_PROSE = re.compile("|".join(sorted(map(re.escape, PROSE), key=len, reverse=True)))


def unasync_text(text: str, source: str) -> str:
    """The sync twin of one async source file."""
    text = _ASYNC_ONLY_BLOCK.sub("", text)
    stray = _MARKER.search(text)
    if stray:
        line = text.count("\n", 0, stray.start()) + 1
        raise SystemExit(f"unasync: {source}: unmatched {stray.group(1)!r} (around line {line})")
    text = _DOCSTRING.sub(lambda m: _ASYNC_ONLY_ARG.sub("", m.group(0)), text)
    for pattern, replacement in _KEYWORDS:
        text = pattern.sub(replacement, text)
    text = _WORDS.sub(lambda m: RENAMES[m.group(1)], text)
    text = _PROSE.sub(lambda m: PROSE[m.group(0)], text)
    header = f"# Generated by scripts/unasync.py from {source}: do not edit.\n"
    return header + text


def outputs() -> dict[Path, str]:
    result: dict[Path, str] = {}
    for src_dir, dst_dir in PAIRS:
        for src in sorted((ROOT / src_dir).rglob("*.py")):
            rel = src.relative_to(ROOT / src_dir)
            name = rel.with_name(_WORDS.sub(lambda m: RENAMES[m.group(1)], rel.name))
            result[ROOT / dst_dir / name] = unasync_text(src.read_text(), f"{src_dir}/{rel}")
    return result


def main(argv: list[str]) -> int:
    check = "--check" in argv
    wanted = outputs()
    stale = []
    for path, text in wanted.items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for _, dst_dir in PAIRS:
        for path in (ROOT / dst_dir).rglob("*.py"):
            if path not in wanted:
                stale.append(path)
                if not check:
                    path.unlink()
    if check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"unasync: stale generated files: {names}; run python scripts/unasync.py")
        return 1
    if not check:
        print(f"unasync: {len(stale)} file(s) written or removed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
