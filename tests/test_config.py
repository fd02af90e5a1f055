"""Backend URLs and the environment -> BackendSpec (pure)."""

from __future__ import annotations

import pytest

from llmrouter import Client, ConfigError
from llmrouter import config as config_module
from llmrouter.config import Secret, Timeouts, parse_backend, parse_chain, resolve_chain

KEY = "sk-test-SECRET-1234567890"


@pytest.mark.parametrize(
    ("url", "base_url"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://example.com/openai/v1/", "https://example.com/openai/v1"),
        ("vllm://gpu-1", "http://gpu-1:8000/v1"),
        ("vllm://gpu-1:9000", "http://gpu-1:9000/v1"),
        ("vllm+https://gpu-1", "https://gpu-1:8000/v1"),
        ("llamacpp://box", "http://box:8080/v1"),
        ("tgi://box:3000", "http://box:3000/v1"),
        ("tgi+https://box", "https://box:8080/v1"),
        ("vllm://[::1]:8000", "http://[::1]:8000/v1"),
        ("vllm://gpu-1:8000/custom/v1", "http://gpu-1:8000/custom/v1"),
    ],
)
def test_http_schemes(url: str, base_url: str) -> None:
    spec = parse_backend(url, {})
    assert spec.kind == (
        "llmrouter.backends.tgi" if url.startswith("tgi") else "llmrouter.backends.openai_compat"
    )
    assert spec.base_url == base_url
    assert spec.api_key is None


def test_openai_scheme_needs_its_key() -> None:
    spec = parse_backend("openai://?model=gpt-4o-mini", {"OPENAI_API_KEY": KEY})
    assert spec.base_url == "https://api.openai.com/v1"
    assert spec.model == "gpt-4o-mini"
    assert spec.api_key == Secret(KEY)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        parse_backend("openai://", {})


def test_openai_scheme_with_a_host_replaces_the_vendor_host() -> None:
    spec = parse_backend("openai+http://127.0.0.1:9000", {"OPENAI_API_KEY": KEY})
    assert spec.base_url == "http://127.0.0.1:9000/v1"


def test_api_key_env_names_the_variable() -> None:
    spec = parse_backend("vllm://a?api_key_env=MY_KEY", {"MY_KEY": KEY})
    assert spec.api_key is not None and spec.api_key.reveal() == KEY
    with pytest.raises(ConfigError, match="MY_KEY"):
        parse_backend("vllm://a?api_key_env=MY_KEY", {})


def test_conventional_key_variables_are_optional_for_servers() -> None:
    assert parse_backend("vllm://a", {"VLLM_API_KEY": KEY}).api_key == Secret(KEY)
    assert parse_backend("vllm://a", {}).api_key is None


def test_query_parameters() -> None:
    spec = parse_backend(
        "vllm://a?model=m&timeout=30&connect_timeout=2&ttft_timeout=5s&read_timeout=9"
        "&max_retries=3&weight=2.5&name=primary&max_context=8192&health=10s",
        {},
    )
    assert spec.model == "m"
    assert spec.timeouts == Timeouts(connect=2.0, read=9.0, ttft=5.0, total=30.0)
    assert spec.max_retries == 3
    assert spec.weight == 2.5
    assert spec.name == "primary"
    assert spec.max_context == 8192
    assert spec.health_interval == 10.0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host", "unknown backend scheme 'ftp://': expected one of"),
        ("vllm+ftp://host", "expected '\\+http' or '\\+https'"),
        ("no-scheme-here", "has no scheme"),
        ("vllm://a?colour=red", "unknown query parameter 'colour'.*expected one of"),
        ("vllm://a?timeout=soon", "timeout='soon': expected a number of seconds"),
        ("vllm://a?timeout=-1", "expected a value >= 0"),
        ("vllm://a?max_retries=1.5", "expected a whole number"),
        ("vllm://a:notaport", "malformed backend URL"),
        ("vllm://a?model=x&model=y", "given twice"),
        ("http:///v1", "expected a host"),
        ("local://", "expected local://NAME"),
        ("vllm://a#frag", "fragments"),
        ("", "empty backend URL"),
    ],
)
def test_bad_urls_say_what_was_expected(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_backend(url, {})


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_backend("grpc://x", {})
    for scheme in (
        "http://",
        "https://",
        "openai://",
        "vllm://",
        "llamacpp://",
        "tgi://",
        "local://",
    ):
        assert scheme in str(info.value)


def test_keys_in_urls_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError, match="api_key_env") as info:
        parse_backend(f"vllm://a?api_key={KEY}", {})
    assert KEY not in str(info.value)


def test_userinfo_is_a_key_and_never_displayed() -> None:
    spec = parse_backend(f"https://user:{KEY}@host/v1", {})
    assert spec.api_key == Secret(KEY)
    assert KEY not in spec.name and "user" not in spec.name
    assert spec.name == "https://host/v1"


def test_chain_parsing() -> None:
    chain = parse_chain("vllm://a | vllm://b, openai://?model=gpt-4o-mini", {"OPENAI_API_KEY": KEY})
    assert [[s.base_url for s in group] for group in chain] == [
        ["http://a:8000/v1", "http://b:8000/v1"],
        ["https://api.openai.com/v1"],
    ]
    with pytest.raises(ConfigError, match="empty entry"):
        parse_chain("vllm://a,,vllm://b", {})
    with pytest.raises(ConfigError, match="empty"):
        parse_chain([], {})


def test_backends_list_accepts_specs_and_urls() -> None:
    spec = parse_backend("vllm://a", {})
    chain = parse_chain([spec, "llamacpp://b"], {})
    assert [g[0].base_url for g in chain] == ["http://a:8000/v1", "http://b:8080/v1"]


def test_llmrouter_url_comes_first() -> None:
    env = {
        "LLMROUTER_URL": "vllm://a, vllm://b",
        "OPENAI_BASE_URL": "http://x/v1",
        "OPENAI_API_KEY": KEY,
    }
    chain = resolve_chain(None, env)
    assert [g[0].base_url for g in chain] == ["http://a:8000/v1", "http://b:8000/v1"]
    assert all(g[0].api_key is None for g in chain)  # OPENAI_API_KEY does not leak to others


def test_openai_base_url_is_honoured_like_the_sdk() -> None:
    env = {
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_API_KEY": KEY,
        "OPENAI_ORG_ID": "org-1",
        "OPENAI_PROJECT_ID": "proj-1",
    }
    (spec,) = resolve_chain(None, env)[0]
    assert spec.base_url == "http://127.0.0.1:9/v1"
    assert spec.api_key == Secret(KEY)
    assert dict(spec.headers) == {"OpenAI-Organization": "org-1", "OpenAI-Project": "proj-1"}
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_chain(None, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})


def test_nothing_configured_uses_the_embedded_model() -> None:
    (spec,) = resolve_chain(None, {})[0]
    assert spec.kind == "llmrouter.backends.llamacpp" and spec.location == "smollm2"


def test_nothing_configured_without_llama_cpp_explains_three_ways(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as info:
        resolve_chain(None, {})
    text = str(info.value)
    assert "LLMROUTER_URL" in text and "OPENAI_BASE_URL" in text and "llmrouter[local]" in text


def test_client_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTER_URL", "vllm://a?model=m, llamacpp://b")
    client = Client()
    assert [s.name for s in client.backends] == ["vllm://a?model=m", "llamacpp://b"]
    assert Client("tgi://c").backends[0].base_url == "http://c:8080/v1"
    assert Client(backends=["tgi://c"]).backends[0].base_url == "http://c:8080/v1"
    with pytest.raises(ConfigError, match="either url or backends"):
        Client("tgi://c", backends=["tgi://d"])


def test_a_name_url_may_hold_colons_an_arn_say() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v2:0"
    spec = parse_backend(f"bedrock://{arn}?region=us-east-1", {})
    assert spec.location == arn
