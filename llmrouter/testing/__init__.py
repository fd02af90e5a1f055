"""The kit for backend authors: what llmrouter's own backend tests are built from.

* :class:`LoopbackServer`: the base of a loopback fake server (a real socket on 127.0.0.1,
  its own event loop in a thread, scripted answers are yours to write);
* :class:`FaultProxy` and :class:`Fault`: a proxy in front of a real server that resets,
  stalls, delays, cuts or answers on cue;
* :mod:`llmrouter.testing.conformance`: the conformance suite (:class:`~.conformance.Adapter`,
  :class:`~.conformance.ConformanceSuite`), the same cases every built-in backend passes.

Imported by tests only, never by ``import llmrouter``; the conformance module needs pytest
(and pytest-asyncio). Writing and testing a backend: ``docs/plugins.md``.
"""

from __future__ import annotations

from llmrouter.testing.fault_proxy import Fault, FaultProxy, status_response
from llmrouter.testing.loopback import LoopbackServer

__all__ = ["Fault", "FaultProxy", "LoopbackServer", "status_response"]
