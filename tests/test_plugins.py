"""Plugins found by entry point, tested in fresh interpreters with real installed
distributions: throwaway ``NAME-1.0.dist-info`` folders (``METADATA`` + ``entry_points.txt``,
all ``importlib.metadata`` needs) on the subprocess's ``PYTHONPATH``.

Checked: a working plugin serves its scheme with no import in the app; a plugin that fails to
import, or lacks ``BACKEND``, is a ``ConfigError`` naming the distribution and what is missing,
with no traceback from inside it; two distributions claiming one scheme name both; a plugin
claiming a built-in scheme never replaces it; the unknown-scheme error lists plugin schemes.
Also ``llmrouter.register_backend`` in code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llmrouter
from llmrouter.backends import BackendDeclaration, registry

ROOT = Path(__file__).resolve().parent.parent

# A working plugin: the OpenAI-compatible codec under its own scheme.
GOOD = """
from llmrouter.backends import BackendDeclaration, Capabilities
from llmrouter.backends import openai_compat

BACKEND = BackendDeclaration(
    scheme="goodplug", codec=openai_compat, default_port=9999, capabilities=Capabilities()
)
"""


def make_dist(root: Path, name: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """An installed distribution ``name`` 1.0 under ``root``: its modules and its metadata."""
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"{scheme} = {value}" for scheme, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[llmrouter.backends]\n" + "\n".join(lines) + "\n")


def run(code: str, site: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that sees the distributions under ``site``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("LLMROUTER_URL", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def config_error(url: str, site: Path) -> str:
    """The ConfigError message ``Client(url)`` raises (the app imports no plugin)."""
    probe = f"""
        import json, llmrouter
        try:
            llmrouter.Client({url!r})
        except llmrouter.ConfigError as exc:
            cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
            print(json.dumps({{"message": str(exc), "cause": repr(cause)}}))
        else:
            print(json.dumps({{"message": None, "cause": None}}))
    """
    out = run(probe, site)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["message"] is not None, "no ConfigError"
    assert result["cause"] == "None", result  # nothing from inside the plugin is chained
    return str(result["message"])


def test_a_plugin_serves_its_scheme_with_no_import(tmp_path: Path) -> None:
    make_dist(tmp_path, "llmrouter-goodplug", {"goodplug": "goodplug"}, {"goodplug.py": GOOD})
    out = run(
        """
        import sys, llmrouter
        client = llmrouter.Client("goodplug://127.0.0.1?model=m")
        [spec] = client.backends
        print(spec.scheme, spec.base_url, "goodplug" in sys.modules)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["goodplug", "http://127.0.0.1:9999/v1", "True"]


def test_a_plugin_that_fails_to_import_names_its_distribution(tmp_path: Path) -> None:
    broken = {"brokenplug/__init__.py": "", "brokenplug/backend.py": "import not_installed_dep\n"}
    make_dist(tmp_path, "llmrouter-brokenplug", {"brokenplug": "brokenplug.backend"}, broken)
    message = config_error("brokenplug://127.0.0.1", tmp_path)
    assert "llmrouter-brokenplug" in message
    assert "brokenplug.backend" in message
    assert "ModuleNotFoundError" in message and "not_installed_dep" in message

    # Uncaught, the user sees llmrouter's error, not the plugin's frames.
    out = run("import llmrouter\nllmrouter.Client('brokenplug://127.0.0.1')", tmp_path)
    assert out.returncode == 1
    assert "llmrouter.errors.ConfigError" in out.stderr
    assert "brokenplug/backend.py" not in out.stderr
    assert "During handling" not in out.stderr


def test_a_plugin_without_backend_says_what_is_missing(tmp_path: Path) -> None:
    files = {"emptyplug.py": "SOMETHING_ELSE = 1\n"}
    make_dist(tmp_path, "llmrouter-emptyplug", {"emptyplug": "emptyplug"}, files)
    message = config_error("emptyplug://127.0.0.1", tmp_path)
    assert "llmrouter-emptyplug" in message
    assert "BACKEND" in message


def test_a_plugin_whose_codec_lacks_a_function_says_which(tmp_path: Path) -> None:
    files = {
        "halfplug.py": """
            from llmrouter.backends import BackendDeclaration
            BACKEND = BackendDeclaration(scheme="halfplug")
            def build_chat(spec, request, model): ...
        """
    }
    make_dist(tmp_path, "llmrouter-halfplug", {"halfplug": "halfplug"}, files)
    message = config_error("halfplug://127.0.0.1", tmp_path)
    assert "llmrouter-halfplug" in message
    assert "parse_chat" in message and "map_error" in message


def test_two_distributions_claiming_one_scheme_are_both_named(tmp_path: Path) -> None:
    make_dist(tmp_path, "llmrouter-dup-one", {"dupplug": "goodplug"}, {"goodplug.py": GOOD})
    make_dist(tmp_path, "llmrouter-dup-two", {"dupplug": "goodplug"}, {})
    message = config_error("dupplug://127.0.0.1", tmp_path)
    assert "llmrouter-dup-one" in message and "llmrouter-dup-two" in message
    assert "more than one" in message


def test_a_plugin_never_replaces_a_built_in(tmp_path: Path) -> None:
    files = {"shadow.py": GOOD.replace('scheme="goodplug"', 'scheme="ollama"')}
    make_dist(tmp_path, "llmrouter-shadow", {"ollama": "shadow"}, files)
    # The built-in serves its scheme (and plugin metadata is not even read for it) ...
    out = run(
        """
        import sys, llmrouter
        [spec] = llmrouter.Client("ollama://127.0.0.1:11434?model=m").backends
        from llmrouter.backends import registry
        print(registry.declaration("ollama").module, "shadow" in sys.modules)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["llmrouter.backends.ollama", "False"]
    # ... and once plugins are read, the claim is an error that names the distribution.
    message = config_error("other://127.0.0.1", tmp_path)
    assert "llmrouter-shadow claims ollama://" in message
    assert "may not replace a built-in" in message


def test_the_unknown_scheme_error_lists_plugin_schemes(tmp_path: Path) -> None:
    make_dist(tmp_path, "llmrouter-goodplug", {"goodplug": "goodplug"}, {"goodplug.py": GOOD})
    message = config_error("nosuch://127.0.0.1", tmp_path)
    assert "'nosuch://'" in message
    assert "ollama://" in message and "anthropic://" in message  # the built-ins
    assert "installed plugins: goodplug://" in message


def test_built_in_urls_read_no_plugin_metadata(tmp_path: Path) -> None:
    make_dist(tmp_path, "llmrouter-goodplug", {"goodplug": "goodplug"}, {"goodplug.py": GOOD})
    out = run(
        """
        import llmrouter
        from llmrouter.backends import registry
        llmrouter.Client("vllm://127.0.0.1:8000?model=m, ollama://127.0.0.1?model=m")
        print(registry._plugins is None)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]


# ---------------------------------------------------------------------------------------------
# In code


def test_register_backend_from_the_top_level_package() -> None:
    from llmrouter.backends import openai_compat

    decl = BackendDeclaration("inhouse", codec=openai_compat, default_port=7001)
    assert llmrouter.register_backend is registry.register_backend
    try:
        assert llmrouter.register_backend(decl) == [decl]
        [spec] = llmrouter.Client("inhouse://10.0.0.5?model=m").backends
        assert spec.base_url == "http://10.0.0.5:7001/v1"
        with pytest.raises(llmrouter.ConfigError, match="already served"):
            llmrouter.register_backend(decl)
    finally:
        registry.unregister_backend("inhouse")
    with pytest.raises(llmrouter.ConfigError, match="installed plugins"):
        llmrouter.Client("inhouse://10.0.0.5?model=m")


def test_every_built_in_scheme_is_declared_and_has_a_capability_row() -> None:
    """The index names, for each built-in scheme, a module that declares it; the generated
    capability table (scripts/capabilities.py) has exactly one row for each."""
    import importlib
    import runpy

    for scheme, module in registry.BUILTIN_SCHEMES.items():
        declared = registry.declarations_in(importlib.import_module(module), module)
        assert scheme in [d.scheme for d in declared], (scheme, module)
    script = runpy.run_path(str(ROOT / "scripts" / "capabilities.py"))
    labels = [label for label, _ in script["rows"]()]
    for scheme in registry.BUILTIN_SCHEMES:
        assert sum(f"`{scheme}://`" in label for label in labels) == 1, scheme
