"""One module per wire protocol, each a sans-IO codec (or an in-process engine adapter).

Modules load lazily: the router imports a backend only when a URL names its scheme. How to add
one: ``ADDING_A_BACKEND.md`` beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Capabilities"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend's protocol can do; each codec module declares ``CAPABILITIES``.

    A request that needs a capability a backend lacks is an ``InvalidRequestError`` there,
    never a silently dropped feature.
    """

    tools: bool = True
    tool_choice: bool = True
    json_object: bool = True
    json_schema: bool = True
    stream_usage: bool = True
    seed: bool = True
    n: bool = False  # more than one choice per request
    logprobs: bool = False
    stop: bool = True
