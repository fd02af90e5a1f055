#!/usr/bin/env bash
# The llmrouter gateway in front of two vLLM replicas, with a commercial API as the fallback.
#
#   clients (any OpenAI SDK, curl, ...) --> llmrouter serve :8080 --> vllm-a:8000 | vllm-b:8000
#                                                                 `-> api.openai.com (fallback)
#
# Requests are balanced across the two replicas (the `|` group: least outstanding requests
# first). A replica that refuses, resets, times out or answers 429/5xx is left at once for the
# other; when both fail, the request goes to OpenAI. Each backend gets a circuit breaker, and
# `health=10s` probes each replica's /health so a dead one is skipped before any request
# reaches it. Streams fail over until their first content. See docs/gateway.md and
# docs/resilience.md.
#
# Usage:
#   export VLLM_API_KEY=...          # the key both vLLM replicas were started with (--api-key)
#   export OPENAI_API_KEY=sk-...     # the fallback's key
#   export LLMROUTER_API_KEYS="team-a:sk-team-a-...,team-b:sk-team-b-..."   # who may call us
#   bash examples/gateway_two_vllm_plus_fallback.sh
#
#   curl -s http://localhost:8080/v1/chat/completions -H "Authorization: Bearer sk-team-a-..." \
#        -H 'content-type: application/json' \
#        -d '{"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Hi!"}]}'
#
# `model=` pins what each backend is asked for, so one request can travel from vLLM (serving
# meta-llama/Llama-3.1-8B-Instruct as "llama-3.1-8b", via --served-model-name) to OpenAI's
# gpt-4o-mini; the `model` a client sends is then only a label.
set -euo pipefail

export LLMROUTER_URL="vllm://vllm-a:8000?model=llama-3.1-8b&ttft_timeout=2&health=10s | vllm://vllm-b:8000?model=llama-3.1-8b&ttft_timeout=2&health=10s, openai://?model=gpt-4o-mini&timeout=30"

: "${VLLM_API_KEY:?set VLLM_API_KEY to the key the vLLM replicas require}"
: "${OPENAI_API_KEY:?set OPENAI_API_KEY for the fallback}"
# Listening on 0.0.0.0 requires keys: the gateway refuses to start open to the network.
: "${LLMROUTER_API_KEYS:?set LLMROUTER_API_KEYS (comma-separated key or key_id:key entries)}"

exec llmrouter serve --host 0.0.0.0 --port 8080 --rpm 600 --tpm 200000
