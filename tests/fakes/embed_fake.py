"""Loopback fakes of the embedding endpoints, one server per dialect, built from the protocol
references (``docs/embeddings.md`` cites them):

* ``openai``: ``POST /v1/embeddings`` (OpenAI's API reference: at most 2,048 inputs, no empty
  strings, ``encoding_format`` float or base64, ``dimensions``); Azure's
  ``POST /openai/deployments/{deployment}/embeddings?api-version=`` with ``api-key``.
* ``ollama``: ``POST /api/embed`` (``{"model", "input": str | [str], "truncate", "dimensions"}``
  -> ``{"model", "embeddings": [[...]], "prompt_eval_count"}``), ``GET /api/tags``.
* ``tei``: Text Embeddings Inference: ``POST /embed`` (``{"inputs", "normalize", "truncate",
  "dimensions"}`` -> ``[[...]]``; more than ``max_client_batch_size`` (32) inputs is a 413 with
  ``{"error", "error_type": "Validation"}``, an empty input a 422 ``Empty``),
  ``POST /v1/embeddings``, ``GET /info``, ``GET /health``.
* ``gemini``: ``POST /v1beta/models/{m}:embedContent`` and ``:batchEmbedContents`` (at most 100
  requests, each ``{"model": "models/{m}", "content": {"parts": [{"text"}]},
  "outputDimensionality"}`` -> ``{"embeddings": [{"values": [...]}]}``), key in
  ``x-goog-api-key``.

Vectors are deterministic (a hash of the text), unit length, ``dim`` long. ``fail(...)`` queues
error answers for the next requests; ``requests`` records what arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from llmrouter._embed import encode_base64
from llmrouter.testing import LoopbackServer

__all__ = ["EmbedFake", "Recorded", "vector"]


def vector(text: str, dim: int = 8, salt: str = "") -> list[float]:
    """The fake's vector for ``text``: from its SHA-256, unit length."""
    raw = hashlib.sha256((salt + text).encode()).digest() * (dim // 8 + 1)
    values = [b - 127.5 for b in raw[:dim]]
    norm = math.sqrt(sum(v * v for v in values))
    # Rounded through float32 so base64 and float answers agree exactly.
    return [struct.unpack("f", struct.pack("f", v / norm))[0] for v in values]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class _Failure:
    status: int
    body: dict[str, Any] | list[Any]
    headers: dict[str, str] = field(default_factory=dict)


class EmbedFake(LoopbackServer):
    """One embeddings server of ``dialect`` (see the module docstring)."""

    def __init__(
        self, dialect: str = "openai", *, dim: int = 8, model: str = "fake-embed", salt: str = ""
    ) -> None:
        super().__init__()
        self.dialect = dialect
        self.dim = dim
        self.model = model
        self.salt = salt  # a different "model": a different vector space
        self.requests: list[Recorded] = []
        self.max_batch = {"tei": 32, "gemini": 100}.get(dialect, 2048)
        self._failures: deque[_Failure] = deque()
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fail(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """The next ``times`` requests answer ``status`` with the dialect's error body."""
        for _ in range(times):
            self._failures.append(_Failure(status, self._error(status, "injected"), headers or {}))

    def _vec(self, text: Any) -> list[float]:
        return vector(json.dumps(text) if not isinstance(text, str) else text, self.dim, self.salt)

    def _error(self, status: int, message: str, kind: str = "Validation") -> dict[str, Any]:
        if self.dialect == "tei":
            return {"error": message, "error_type": kind}
        if self.dialect == "ollama":
            return {"error": message}
        if self.dialect == "gemini":
            names = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
            return {"error": {"code": status, "message": message, "status": names.get(status, "X")}}
        return {"error": {"message": message, "type": "invalid_request_error", "code": None}}

    # -- HTTP ---------------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            url = urlsplit(target)
            body = json.loads(raw) if raw else None
            self.requests.append(Recorded(method, url.path, parse_qs(url.query), headers, body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.delay:
                    await asyncio.sleep(self.delay)
                status, answer, extra = self._answer(method, url.path, body)
            finally:
                self.in_flight -= 1
            data = json.dumps(answer).encode()
            extra_head = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra_head}"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if method == "GET":
            return self._get(path)
        if self._failures:
            failure = self._failures.popleft()
            return failure.status, failure.body, failure.headers
        try:
            if path.endswith("/embeddings"):
                return 200, self._openai(body), {}
            if self.dialect == "ollama" and path == "/api/embed":
                return 200, self._ollama(body), {}
            if self.dialect == "tei" and path == "/embed":
                return 200, self._tei(body), {"x-compute-tokens": str(self._tokens(body))}
            if self.dialect == "gemini" and ":" in path:
                return 200, self._gemini(path, body), {}
        except _Refused as exc:
            return exc.status, self._error(exc.status, exc.message, exc.kind), {}
        return 404, self._error(404, f"no route {path}"), {}

    def _get(self, path: str) -> tuple[int, Any, dict[str, str]]:
        if path == "/api/tags":
            return 200, {"models": [{"name": self.model, "model": self.model}]}, {}
        if path == "/info":
            return 200, {"model_id": self.model, "max_client_batch_size": self.max_batch}, {}
        if path in ("/health", "/"):
            return 200, {}, {}
        if path.endswith("/models"):
            return 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]}, {}
        return 404, self._error(404, "not found"), {}

    @staticmethod
    def _tokens(body: Any) -> int:
        inputs = body.get("inputs", body.get("input"))
        items = [inputs] if isinstance(inputs, str) else inputs
        return sum(len(i.split()) if isinstance(i, str) else len(i) for i in items)

    # -- dialects -----------------------------------------------------------------------------

    def _inputs(self, value: Any, empty_ok: bool = False) -> list[Any]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise _Refused(400, "'$.input' is invalid", "Validation")
        if len(items) > self.max_batch:
            status = 413 if self.dialect == "tei" else 400
            raise _Refused(status, f"batch size {len(items)} > {self.max_batch}", "Validation")
        if not empty_ok and any(i == "" for i in items):
            raise _Refused(422 if self.dialect == "tei" else 400, "empty input", "Empty")
        return items

    def _sized(self, vec: list[float], dims: Any) -> list[float]:
        if dims is None:
            return vec
        cut = vec[:dims]
        norm = math.sqrt(sum(v * v for v in cut)) or 1.0
        return [struct.unpack("f", struct.pack("f", v / norm))[0] for v in cut]

    def _openai(self, body: dict[str, Any]) -> dict[str, Any]:
        items = self._inputs(body.get("input"))
        fmt = body.get("encoding_format", "float")
        data = []
        for i, item in enumerate(items):
            vec = self._sized(self._vec(item), body.get("dimensions"))
            data.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": encode_base64(vec) if fmt == "base64" else vec,
                }
            )
        tokens = sum(len(i.split()) if isinstance(i, str) else len(i) for i in items)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model") or self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _ollama(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("model"):
            raise _Refused(400, "model is required")
        items = self._inputs(body.get("input"), empty_ok=True)
        return {
            "model": body["model"],
            "embeddings": [self._sized(self._vec(i), body.get("dimensions")) for i in items],
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": sum(len(i.split()) for i in items),
        }

    def _tei(self, body: dict[str, Any]) -> list[list[float]]:
        items = self._inputs(body.get("inputs"))
        return [self._sized(self._vec(i), body.get("dimensions")) for i in items]

    def _gemini(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        model, _, verb = path.rsplit("/", 1)[-1].partition(":")

        def one(request: dict[str, Any]) -> dict[str, Any]:
            text = "".join(p.get("text", "") for p in request["content"]["parts"])
            if not text:
                raise _Refused(400, "empty text")
            return {"values": self._sized(self._vec(text), request.get("outputDimensionality"))}

        if verb == "embedContent":
            return {"embedding": one(body)}
        if verb == "batchEmbedContents":
            requests = body.get("requests") or []
            if len(requests) > self.max_batch:
                raise _Refused(400, f"at most {self.max_batch} requests can be in one batch")
            for request in requests:
                if request.get("model") != f"models/{model}":
                    raise _Refused(400, "model of each request must match the batch's")
            return {"embeddings": [one(r) for r in requests]}
        raise _Refused(404, f"unknown method {verb}")


class _Refused(Exception):
    def __init__(self, status: int, message: str, kind: str = "Validation") -> None:
        self.status = status
        self.message = message
        self.kind = kind
