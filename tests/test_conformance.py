"""One conformance suite for every built-in backend: the kit's cases
(:mod:`llmrouter.testing.conformance`), sync and async, streamed and not.

Each backend is a loopback fake behind the kit's ``Adapter`` interface (``tests/fakes/
adapters.py``), so what is checked here is the promise of the README: whichever protocol serves
it, the caller sees the OpenAI shape and the same typed errors. The built-ins run through the
same ``ConformanceSuite`` a plugin author subclasses, so the kit cannot rot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import ClassVar

from llmrouter.testing import conformance
from llmrouter.testing.conformance import AdapterFactory, ConformanceSuite
from tests.fakes import adapters as builtin

BUILTIN: dict[str, AdapterFactory] = {name: partial(builtin.start, name) for name in builtin.NAMES}
KEYED = [name for name in builtin.NAMES if builtin._ADAPTERS[name].wrong_key_env]


class TestBuiltinBackends(ConformanceSuite):
    adapters: ClassVar[Mapping[str, AdapterFactory]] = BUILTIN
    keyed_adapters: ClassVar[Sequence[str] | None] = KEYED


def test_the_fakes_script_what_the_kit_expects() -> None:
    """The built-in adapters' constants are the kit's (the cases assert on them)."""
    assert builtin.ERROR_KINDS == conformance.ERROR_KINDS
    assert builtin.RETRY_AFTER == conformance.RETRY_AFTER
    assert builtin.LAST_USER_TEXT == conformance.LAST_USER_TEXT
    assert builtin.GARBAGE == conformance.GARBAGE
