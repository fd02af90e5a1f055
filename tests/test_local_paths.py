"""``local://`` and ``vllm+local://`` paths that name no model: a ConfigError saying so.

A relative location reaches any file (``local://../../etc/passwd``); before this check llama.cpp
got it and raised its own bare ``ValueError``. Nothing here loads a model: the checks run before
llama.cpp or vLLM is asked, so these tests need neither a model file nor a GPU.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmrouter import AsyncClient, Client, ConfigError

HI = [{"role": "user", "content": "hi"}]


def _not_a_model(tmp_path: Path) -> Path:
    path = tmp_path / "notes.gguf"
    path.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    return path


def _cases(tmp_path: Path) -> list[tuple[str, str]]:
    folder = tmp_path / "folder"
    folder.mkdir()
    return [
        ("local://../../../../../../../../etc/passwd", "not a GGUF model file"),
        (f"local://{_not_a_model(tmp_path)}", "not a GGUF model file"),
        (f"local://{folder}", "is a directory"),
        (f"local://{tmp_path}/missing.gguf", "model file not found"),
        ("vllm+local://../../../../../../../../etc/passwd", "neither a model folder nor a GGUF"),
        (f"vllm+local://{folder}", "has no config.json"),
        (f"vllm+local://{tmp_path}/missing", "model path not found"),
    ]


def test_a_path_that_names_no_model_is_a_config_error(tmp_path: Path) -> None:
    for url, message in _cases(tmp_path):
        with Client(url) as client, pytest.raises(ConfigError, match=message) as caught:
            client.chat.completions.create(messages=HI, max_tokens=1)
        assert url.split("?")[0] in str(caught.value)  # names the URL as written


def test_the_async_client_says_the_same(tmp_path: Path) -> None:
    async def main() -> None:
        for url, message in _cases(tmp_path):
            async with AsyncClient(url) as client:
                with pytest.raises(ConfigError, match=message):
                    await client.chat.completions.create(messages=HI, max_tokens=1)

    asyncio.run(main())


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\x00", "\x7f"])
def test_control_characters_in_backend_urls_are_refused(bad: str) -> None:
    for url in (f"http://127.0.0.1:1/v1{bad}X-Injected: 1", f"local://model{bad}.gguf"):
        with pytest.raises(ConfigError, match="control characters") as caught:
            Client(f"http://127.0.0.1:2/v1, {url}")
        assert bad not in str(caught.value)  # escaped in the message: no forged log lines
