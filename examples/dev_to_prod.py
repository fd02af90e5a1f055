"""The same code on a laptop and in production: only ``LLMROUTER_URL`` changes.

    # dev: Ollama on the laptop (native /api/chat)
    LLMROUTER_URL="ollama://localhost:11434?model=llama3.2" python examples/dev_to_prod.py

    # prod: two vLLM replicas (one load-balanced group), then a commercial fallback
    export VLLM_API_KEY=...  OPENAI_API_KEY=...
    LLMROUTER_URL="vllm://gpu-1:8000?model=meta-llama/Llama-3.1-8B-Instruct \\
                   | vllm://gpu-2:8000?model=meta-llama/Llama-3.1-8B-Instruct, \\
                   openai://?model=gpt-4o-mini" python examples/dev_to_prod.py

Nothing below names a backend, a model or a key: they all come from the environment. The
answer says which backend served it (``resp.route``), so logs show where traffic went.
"""

from __future__ import annotations

import sys

from llmrouter import Client, LLMRouterError

SYSTEM = "You are a helpful assistant. Answer in one short sentence."


def ask(client: Client, question: str) -> str:
    """One answer, as plain text; a failure of every backend raises a typed error."""
    resp = client.chat.completions.create(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        max_tokens=48,
        temperature=0,
    )
    route = resp.route
    print(f"[served by {route.backend} after {len(route.attempts)} attempt(s)]", file=sys.stderr)
    return resp.choices[0].message.content or ""


def ask_streaming(client: Client, question: str) -> str:
    """The same question, streamed to stdout as it is generated."""
    parts: list[str] = []
    with client.chat.completions.create(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        max_tokens=48,
        temperature=0,
        stream=True,
    ) as stream:
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                parts.append(text)
                print(text, end="", flush=True)
    print()
    print(f"[streamed by {stream.route.backend}]", file=sys.stderr)
    return "".join(parts)


def main() -> int:
    question = " ".join(sys.argv[1:]) or "What is the capital of France?"
    try:
        with Client() as client:  # LLMROUTER_URL decides where this goes
            print(ask(client, question))
            ask_streaming(client, question)
    except LLMRouterError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
