"""mypy checks the codec module against llmrouter's HTTPCodec protocol (``mypy --strict``)."""

import llmrouter_llamacpp_native.backend as backend

from llmrouter.backends import HTTPCodec

codec: HTTPCodec = backend
