"""``chat.completions.parse``: a pydantic model in, a validated instance out, on real engines."""

from __future__ import annotations

import httpx2
import pydantic
import pytest

from llmrouter import AsyncClient, InvalidRequestError, OutputParseError
from llmrouter._http import HttpxAsyncTransport
from tests.conftest import PARIS


class Capital(pydantic.BaseModel):
    country: str
    capital: str


@pytest.mark.llama_server
async def test_parse_on_the_llama_cpp_server(llama_server: str) -> None:
    # llamacpp:// maps json_schema to the server's {"type": "json_object", "schema": ...}.
    base = llama_server.removeprefix("http://").removesuffix("/v1")
    async with AsyncClient(f"llamacpp://{base}") as client:
        resp = await client.chat.completions.parse(
            messages=PARIS, response_format=Capital, max_tokens=60, temperature=0
        )
    parsed = resp.choices[0].message.parsed
    assert isinstance(parsed, Capital)
    assert "capital" not in resp.model_dump(exclude_unset=True)["choices"][0]["message"]
    assert Capital.model_validate_json(resp.choices[0].message.content) == parsed


@pytest.mark.local_engine
async def test_parse_on_the_embedded_engine() -> None:
    async with AsyncClient("local://smollm2") as client:
        resp = await client.chat.completions.parse(
            messages=PARIS, response_format=Capital, max_tokens=60, temperature=0
        )
    assert isinstance(resp.choices[0].message.parsed, Capital)


async def test_output_that_does_not_validate_raises_with_the_raw_text() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": '{"country": "France"}'},
                    }
                ],
            },
        )

    transport = HttpxAsyncTransport(transport=httpx2.MockTransport(handler))
    async with AsyncClient("http://fake/v1?model=m", transport=transport) as client:
        with pytest.raises(OutputParseError) as info:
            await client.chat.completions.parse(messages=PARIS, response_format=Capital)
        with pytest.raises(InvalidRequestError, match="pydantic model class"):
            await client.chat.completions.parse(messages=PARIS, response_format=dict)
    assert info.value.raw == '{"country": "France"}'
    assert info.value.validation_error is not None
