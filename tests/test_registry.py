"""The backend registry and declarations, in process: option validation, key variables,
lookups, code registration and the built-in index (plugins by entry point: test_plugins)."""

from __future__ import annotations

import importlib

import pytest

from llmrouter.backends import BackendDeclaration, Capabilities, Option, registry
from llmrouter.backends.interfaces import HTTPCodec
from llmrouter.config import parse_backend
from llmrouter.errors import ConfigError


@pytest.mark.parametrize(
    ("option", "raw", "message"),
    [
        (Option("n", "int", minimum=1), "0", "expected a finite number >= 1"),
        (Option("n", "int"), "1.5", "expected a whole number"),
        (Option("x", "float"), "nan", "expected a finite number"),
        (Option("x", "float"), "abc", "expected a number"),
        (Option("b", "bool"), "maybe", "expected true or false"),
        (Option("m", choices=("a", "b")), "c", "expected one of a, b"),
    ],
)
def test_options_are_validated_with_their_types(option: Option, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        option.validate(raw)


def test_valid_option_values_pass_unchanged() -> None:
    assert Option("n", "int", minimum=1).validate("4") == "4"
    assert Option("b", "bool").validate("True") == "True"


def test_every_builtin_scheme_is_declared_by_its_module() -> None:
    for scheme, module_name in registry.BUILTIN_SCHEMES.items():
        module = importlib.import_module(module_name)
        schemes = [d.scheme for d in registry.declarations_in(module, module_name)]
        assert scheme in schemes, (scheme, module_name)
        decl = registry.declaration(scheme)
        assert decl.module == module_name
        if decl.kind == "http":
            codec = registry.codec_of(decl)
            assert all(hasattr(codec, name) for name in registry.CODEC_NAMES)
        else:
            assert registry.async_engine_class(decl).__name__.startswith("Async")
            assert not registry.engine_class(decl).__name__.startswith("Async")


def test_declared_capabilities_are_the_modules_table() -> None:
    from llmrouter.backends import anthropic, openai_compat

    assert registry.declaration("anthropic").capabilities is anthropic.CAPABILITIES
    assert registry.declaration("vllm").capabilities is openai_compat.CAPABILITIES


def test_key_variables_are_tried_in_order() -> None:
    from llmrouter.backends import openai_compat

    decl = BackendDeclaration(
        "twokeys", codec=openai_compat, key_env=("FIRST_KEY", "SECOND_KEY"), key_required=True
    )
    registry.register_backend(decl)
    try:
        spec = parse_backend("twokeys://h", {"SECOND_KEY": "two"})
        assert spec.api_key is not None and spec.api_key.reveal() == "two"
        spec = parse_backend("twokeys://h", {"FIRST_KEY": "one", "SECOND_KEY": "two"})
        assert spec.api_key is not None and spec.api_key.reveal() == "one"
        with pytest.raises(ConfigError, match="set FIRST_KEY or SECOND_KEY"):
            parse_backend("twokeys://h", {})
    finally:
        registry.unregister_backend("twokeys")


def test_code_registration_cannot_take_a_builtin_silently() -> None:
    from llmrouter.backends import openai_compat

    with pytest.raises(ConfigError, match="already served by a built-in backend"):
        registry.register_backend(BackendDeclaration("vllm", codec=openai_compat))
    with pytest.raises(ConfigError, match="has no codec and no engine"):
        registry.register_backend(BackendDeclaration("nothing"))


def test_a_codec_missing_names_is_refused() -> None:
    with pytest.raises(ConfigError, match="lacks build_chat"):
        registry.register_backend(BackendDeclaration("broken", codec=object()))


def test_declared_options_defaults_and_hooks_shape_the_spec() -> None:
    from llmrouter.backends import openai_compat

    registry.register_backend(
        BackendDeclaration(
            "mine",
            codec=openai_compat,
            default_port=9000,
            default_path="/api",
            options=(Option("mode", choices=("fast", "exact"), default="fast"),),
        )
    )
    try:
        spec = parse_backend("mine://box", {})
        assert spec.base_url == "http://box:9000/api"
        assert dict(spec.options) == {"mode": "fast"}
        assert parse_backend("mine+https://box:1?mode=exact", {}).base_url == "https://box:1/api"
        with pytest.raises(ConfigError, match="unknown query parameter 'other'"):
            parse_backend("mine://box?other=1", {})
    finally:
        registry.unregister_backend("mine")


def test_control_characters_in_a_url_are_refused() -> None:
    with pytest.raises(ConfigError, match="control characters"):
        parse_backend("vllm://host\r\nX-Injected: 1", {})


def test_builtin_codecs_satisfy_the_codec_protocol() -> None:
    # The static check is tests/typecheck/codecs.py (mypy); this is its runtime shadow.
    from llmrouter.backends import anthropic, azure, ollama, openai_compat, sagemaker, tgi

    codecs: list[HTTPCodec] = [openai_compat, tgi, ollama, anthropic, azure, sagemaker]
    assert all(callable(c.build_chat) for c in codecs)


def test_capabilities_default_to_the_openai_baseline() -> None:
    assert BackendDeclaration("x", codec="m").capabilities == Capabilities()
