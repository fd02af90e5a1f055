"""Moved to :mod:`llmrouter.testing.fault_proxy` (the kit for backend authors); kept so that
existing imports work."""

from llmrouter.testing.fault_proxy import Fault, FaultProxy, status_response

__all__ = ["Fault", "FaultProxy", "status_response"]
