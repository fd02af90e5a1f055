"""The Bedrock fake (``bedrock_fake.BedrockFake``: SigV4 verified with botocore) plus
``InvokeModel`` for embedding models (``POST /model/{id}/invoke``), from the Bedrock user
guide's model parameters:

* Titan Text Embeddings v2: ``{"inputText" (required), "dimensions" (1024, 512, 256),
  "normalize", "embeddingTypes"}`` -> ``{"embedding", "inputTextTokenCount"}``; v1 takes
  ``inputText`` only.
* Cohere Embed v3: ``{"texts" (at most 96, each at most 2,048 characters), "input_type"
  (required: search_document, search_query, classification, clustering), "truncate"}`` ->
  ``{"embeddings", "id", "response_type": "embeddings_floats", "texts"}``, the token count in
  ``X-Amzn-Bedrock-Input-Token-Count``.

Anything else is a 400 ``ValidationException`` (``Malformed input request``), as Bedrock says.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from tests.fakes.bedrock_fake import BedrockFake, verify_sigv4
from tests.fakes.embed_fake import vector
from tests.fakes.openai_fake import Error
from tests.fakes.sagemaker_fake import AwsError

__all__ = ["COHERE", "TITAN", "BedrockEmbedFake"]

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
_INVOKE = re.compile(r"^/model/(?P<model>[^/]+)/invoke$")
_INPUT_TYPES = {"search_document", "search_query", "classification", "clustering"}


class BedrockEmbedFake(BedrockFake):
    def __init__(self, models: list[str] | None = None, dim: int = 8) -> None:
        super().__init__(models=models or [TITAN, COHERE])
        self.dim = dim
        self.invocations: list[dict[str, Any]] = []

    def _answer(self, request: Any) -> tuple[Any, bool]:
        route = _INVOKE.match(request.path.split("?", 1)[0])
        if route is None or request.method != "POST":
            return super()._answer(request)
        problem = verify_sigv4(request, self.secrets, self.region)
        if problem is not None:
            self.auth_failures.append(problem)
            return AwsError(403, *problem), False
        model = unquote(route["model"])
        if model not in self.models:
            return AwsError(
                400, "ValidationException", "The provided model identifier is invalid."
            ), False
        body = json.loads(request.body)
        self.invocations.append(body)
        if self._queue:
            return self._queue.popleft(), False
        if model.startswith("amazon.titan-embed"):
            return self._titan(body, model), False
        return self._cohere(body), False

    def _malformed(self, why: str) -> AwsError:
        return AwsError(400, "ValidationException", f"Malformed input request: {why}")

    def _titan(self, body: dict[str, Any], model: str) -> Any:
        allowed = {"inputText", "dimensions", "normalize", "embeddingTypes"}
        if "v1" in model:
            allowed = {"inputText"}
        if set(body) - allowed or not isinstance(body.get("inputText"), str):
            return self._malformed(f"extraneous key(s) {sorted(set(body) - allowed)}")
        dims = body.get("dimensions", self.dim)
        if dims not in (self.dim, 256, 512, 1024):
            return self._malformed("dimensions")
        vec = vector(body["inputText"], self.dim)[:dims]
        return Error(200, {"embedding": vec, "inputTextTokenCount": len(body["inputText"].split())})

    def _cohere(self, body: dict[str, Any]) -> Any:
        texts = body.get("texts")
        if (
            not isinstance(texts, list)
            or len(texts) > 96
            or body.get("input_type") not in _INPUT_TYPES
        ):
            return self._malformed("texts (at most 96) and input_type are required")
        if any(not isinstance(t, str) or len(t) > 2048 for t in texts):
            return self._malformed("each text is a string of at most 2048 characters")
        tokens = sum(len(t.split()) for t in texts)
        answer = {
            "embeddings": [vector(t, self.dim) for t in texts],
            "id": "emb-1",
            "response_type": "embeddings_floats",
            "texts": texts,
        }
        return Error(200, answer, headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens)})
