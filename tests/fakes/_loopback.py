"""Moved to :mod:`llmrouter.testing.loopback` (the kit for backend authors); kept so that
existing imports work."""

from llmrouter.testing.loopback import LoopbackServer

__all__ = ["LoopbackServer"]
