"""The openai SDK's own README examples, run twice against the real llama.cpp server: once with
the ``openai`` package, once with only the import lines changed to llmrouter.

Each example below is the SDK README's code (``github.com/openai/openai-python``, README.md:
"Usage", "Async usage", "Streaming responses", "Handling errors", "Retries", "Timeouts",
"Accessing raw response data", ".with_streaming_response", "Managing HTTP resources"; the
README of the openai release installed here, which builds on ``httpx2``), with the
model name, a ``max_tokens`` and the ``print`` calls replaced by values the test reads
(``result``), and the tools example from OpenAI's function-calling guide. The swap is textual and
touches import lines only (:func:`swap_imports`); both runs must give the same kind of answer,
so each example is checked against the SDK it was written for as well as against llmrouter.
The environment is the SDK's: ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import pytest

from llmrouter.events import Event
from tests.conftest import free_port

pytest.importorskip("openai")

MODEL = "smollm2"  # llama-cpp-python's server serves one model whatever name a call gives

EXAMPLES: dict[str, str] = {
    "usage": """
        import os
        from openai import OpenAI

        client = OpenAI(
            # This is the default and can be omitted
            api_key=os.environ.get("OPENAI_API_KEY"),
        )

        completion = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "Talk like a pirate."},
                {
                    "role": "user",
                    "content": "How do I check if a Python object is an instance of a class?",
                },
            ],
            max_tokens=16,
        )
        result = (completion.choices[0].message.content, completion.usage.total_tokens)
    """,
    "async": """
        import os
        import asyncio
        from openai import AsyncOpenAI

        client = AsyncOpenAI(
            # This is the default and can be omitted
            api_key=os.environ.get("OPENAI_API_KEY"),
        )


        async def main() -> None:
            completion = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say this is a test"}],
                max_tokens=8,
            )
            return completion.choices[0].message.content


        result = asyncio.run(main())
    """,
    "streaming": """
        from openai import OpenAI

        client = OpenAI()

        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say this is a test"}],
            stream=True,
            max_tokens=8,
        )
        parts = []
        for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
        result = "".join(parts)
    """,
    "async streaming": """
        import asyncio
        from openai import AsyncOpenAI

        client = AsyncOpenAI()


        async def main():
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say this is a test"}],
                stream=True,
                max_tokens=8,
            )
            parts = []
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
            await client.close()
            return "".join(parts)


        result = asyncio.run(main())
    """,
    "tools": """
        import json
        from openai import OpenAI

        client = OpenAI()

        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get current temperature for a given location.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "location": {
                                "type": "string",
                                "description": "City and country e.g. Bogota, Colombia",
                            }
                        },
                        "required": ["location"],
                        "additionalProperties": False,
                    },
                },
            }
        ]

        completion = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the weather like in Paris today?"}],
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=48,
        )
        call = completion.choices[0].message.tool_calls[0]
        result = (call.function.name, json.loads(call.function.arguments))
    """,
    "with_options": """
        import httpx2
        from openai import OpenAI

        # Configure the default for all requests:
        client = OpenAI(
            # default is 2
            max_retries=0,
            # 20 seconds (default is 10 minutes)
            timeout=20.0,
        )

        # Or, configure per-request:
        first = client.with_options(max_retries=5).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "How can I get the name of the current day?"}],
            max_tokens=4,
        )

        # More granular control:
        client = OpenAI(
            timeout=httpx2.Timeout(60.0, read=30.0, write=10.0, connect=2.0),
        )

        # Override per-request:
        second = client.with_options(timeout=30.0).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "How can I list all files in a directory?"}],
            max_tokens=4,
        )
        result = (first.choices[0].finish_reason, second.choices[0].finish_reason)
    """,
    "status error": """
        import openai
        from openai import OpenAI

        client = OpenAI(max_retries=0)

        try:
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "word " * 3000}],  # over n_ctx=2048
                max_tokens=4,
            )
        except openai.APIConnectionError as e:
            result = ("connection", e.__cause__)
        except openai.RateLimitError as e:
            result = ("rate limit", 429)
        except openai.APIStatusError as e:
            result = ("status", e.status_code, e.request_id, e.body, e.message, e)
    """,
    "connection error": """
        import openai
        from openai import OpenAI

        client = OpenAI(base_url=DEAD_URL, max_retries=0, timeout=5.0)

        try:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        except openai.APIConnectionError as e:
            result = ("connection", isinstance(e, openai.APIError), str(e))
        except openai.APIStatusError as e:
            result = ("status", e.status_code)
    """,
    "raw response": """
        from openai import OpenAI

        client = OpenAI()
        response = client.chat.completions.with_raw_response.create(
            messages=[{"role": "user", "content": "Say this is a test"}],
            model=MODEL,
            max_tokens=4,
        )
        # get the object that `chat.completions.create()` would have returned
        completion = response.parse()
        result = (
            response.headers.get("content-type"),
            response.status_code,
            completion.choices[0].finish_reason,
            completion.to_dict()["object"],
            json.loads(completion.to_json())["id"] == completion.id,
            json.loads(completion.model_dump_json())["model"] == completion.model,
        )
    """,
    "streaming response": """
        from openai import OpenAI

        client = OpenAI()
        with client.chat.completions.with_streaming_response.create(
            messages=[{"role": "user", "content": "Say this is a test"}],
            model=MODEL,
            stream=True,
            max_tokens=4,
        ) as response:
            content_type = response.headers.get("content-type")
            lines = [line for line in response.iter_lines() if line]
        result = (content_type, lines[0].startswith("data: {"), lines[-1])
    """,
    "models and close": """
        from openai import OpenAI

        import openai

        with OpenAI() as client:
            ids = [model.id for model in client.models.list()]
            try:
                retrieved = client.models.retrieve(ids[0]).id == ids[0]
            except openai.NotFoundError:  # the server has no GET /v1/models/{id}
                retrieved = None
        closed = client.is_closed()
        result = (len(ids), retrieved, closed)
    """,
}


def swap_imports(source: str) -> str:
    """The migration: change the import lines, nothing else."""
    swapped = []
    for line in source.splitlines():
        if line.strip() == "import openai":
            line = line.replace("import openai", "import llmrouter as openai")
        elif line.lstrip().startswith("from openai import "):
            names = line.split(" import ", 1)[1].split(", ")
            renamed = {"OpenAI": "Client as OpenAI", "AsyncOpenAI": "AsyncClient as AsyncOpenAI"}
            line = "from llmrouter import " + ", ".join(renamed.get(n, n) for n in names)
        swapped.append(line)
    return "\n".join(swapped)


def run_example(name: str, sdk: str) -> Any:
    source = textwrap.dedent(EXAMPLES[name])
    if sdk == "llmrouter":
        source = swap_imports(source)
        assert "openai import" not in source and "llmrouter" in source
    scope: dict[str, Any] = {
        "MODEL": MODEL,
        "DEAD_URL": f"http://127.0.0.1:{free_port()}/v1",
        "json": json,
    }
    exec(compile(source, f"<openai README: {name} ({sdk})>", "exec"), scope)
    return scope["result"]


@pytest.fixture
def openai_env(llama_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The SDK's configuration, and nothing of llmrouter's."""
    for name in ("LLMROUTER_URL", "LLMROUTER_STATE", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-migration-test-key-0123456789")
    return llama_server


SDKS = pytest.mark.parametrize("sdk", ["openai", "llmrouter"])


def test_the_swap_touches_only_imports() -> None:
    for source in EXAMPLES.values():
        before, after = source.splitlines(), swap_imports(source).splitlines()
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert changed and all("import" in a and "import" in b for a, b in changed)


@SDKS
def test_usage(openai_env: str, sdk: str) -> None:
    text, total_tokens = run_example("usage", sdk)
    assert isinstance(text, str) and text.strip()
    assert total_tokens > 16


@SDKS
@pytest.mark.parametrize("name", ["async", "streaming", "async streaming"])
def test_async_and_streaming(openai_env: str, sdk: str, name: str) -> None:
    text = run_example(name, sdk)
    assert isinstance(text, str) and text.strip()


@SDKS
def test_tools(openai_env: str, sdk: str) -> None:
    name, arguments = run_example("tools", sdk)
    assert name == "get_weather"
    assert isinstance(arguments["location"], str) and arguments["location"]


@SDKS
def test_with_options_and_timeouts(openai_env: str, sdk: str) -> None:
    assert run_example("with_options", sdk) == ("length", "length")


@SDKS
def test_status_error(openai_env: str, sdk: str) -> None:
    kind, status, request_id, body, message, error = run_example("status error", sdk)
    assert kind == "status"
    assert status == 400
    assert isinstance(request_id, str) and request_id  # llama-cpp-python's x-request-id
    assert isinstance(body, dict) and "context" in json.dumps(body).lower()
    assert isinstance(message, str) and message
    if sdk == "llmrouter":
        import llmrouter

        # The except clauses above are llmrouter's own classes under the openai names.
        assert isinstance(error, llmrouter.BadRequestError | llmrouter.ContextLengthError)
        assert isinstance(error, llmrouter.APIError) and isinstance(error, llmrouter.StatusError)


@SDKS
def test_connection_error(openai_env: str, sdk: str) -> None:
    kind, is_api_error, text = run_example("connection error", sdk)
    assert (kind, is_api_error) == ("connection", True)
    assert "sk-migration" not in text


@SDKS
def test_raw_response(openai_env: str, sdk: str) -> None:
    content_type, status, finish_reason, obj, same_id, same_model = run_example("raw response", sdk)
    assert content_type is not None and content_type.startswith("application/json")
    assert (status, finish_reason, obj, same_id, same_model) == (
        200,
        "length",
        "chat.completion",
        True,
        True,
    )


@SDKS
def test_streaming_response(openai_env: str, sdk: str) -> None:
    content_type, first_is_data, last = run_example("streaming response", sdk)
    assert content_type is not None and content_type.startswith("text/event-stream")
    assert first_is_data
    assert last == "data: [DONE]"


@SDKS
def test_models_and_close(openai_env: str, sdk: str) -> None:
    # llama-cpp-python's server has no GET /v1/models/{id}: the SDK gets its 404, llmrouter
    # finds the model in the list (which is how it retrieves from every backend).
    retrieved = None if sdk == "openai" else True
    assert run_example("models and close", sdk) == (1, retrieved, True)


@pytest.mark.parametrize("sdk", ["openai", "llmrouter"])
def test_closed_client_refuses(openai_env: str, sdk: str) -> None:
    import openai

    import llmrouter

    cls = openai.OpenAI if sdk == "openai" else llmrouter.Client
    client = cls()
    client.close()
    # The SDK's closed client raises httpx's RuntimeError; llmrouter's ClientClosedError is one.
    with pytest.raises(RuntimeError, match="client has been closed"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )


def test_key_given_in_code_stays_secret(openai_env: str, caplog: pytest.LogCaptureFixture) -> None:
    import llmrouter

    key = "sk-in-code-secret-abcdefghijklmnop"
    events: list[Event] = []
    client = llmrouter.Client(base_url=openai_env, api_key=key, on_event=events.append)
    with caplog.at_level("DEBUG", logger="llmrouter"):
        resp = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    seen = " ".join(
        [repr(client), repr(resp.route), str(resp.route.attempts), caplog.text]
        + [e.message() + repr(e) for e in events]
    )
    assert events and key not in seen and not re.search(r"in-code-secret", seen)
