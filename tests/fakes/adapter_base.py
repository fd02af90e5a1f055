"""The built-in adapters' base: the kit's :class:`llmrouter.testing.conformance.Adapter`, with
``script_close`` scripted the way the OpenAI-shaped fakes here close a connection."""

from __future__ import annotations

from llmrouter.testing import conformance
from tests.fakes.openai_fake import Close

__all__ = ["Adapter"]


class Adapter(conformance.Adapter):
    """One built-in backend's fake, seen through the conformance suite's eyes."""

    def script_close(self) -> None:
        self.script(Close())
