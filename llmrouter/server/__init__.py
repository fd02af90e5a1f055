"""The OpenAI-compatible gateway, ``llmrouter serve``: llmrouter's failover behind an HTTP API.

Point any OpenAI SDK at ``http://host:port/v1`` and it gets the configured chain's failover,
retries and circuit breakers. Modules, one concern each:

* ``settings``   the settings type, below every other module (so the imports form no circle);
* ``app``        the aiohttp application, start-up checks, graceful shutdown;
* ``connections`` header and idle timeouts, the connection cap, malformed HTTP, the runner;
* ``routes``     the handlers (chat completions, models, health, ready, metrics);
* ``intake``     reading and checking a request body: no input can cause a 5xx;
* ``upstream``   what a client may see of a backend's error text, and what the log keeps;
* ``streaming``  relaying a stream as SSE, with failover until its first content;
* ``responses``  OpenAI-style error bodies and which status each error becomes;
* ``auth``       API keys and the bearer-token check;
* ``ratelimit``  per-key request and token buckets (pure, clock injected);
* ``metrics``    Prometheus text exposition, fed by the client's events;
* ``accesslog``  JSON access lines on the ``llmrouter.access`` logger.

See ``docs/gateway.md``.
"""

from llmrouter.server.app import check_bind, create_app, run, serve
from llmrouter.server.auth import KeyStore
from llmrouter.server.connections import GatewayRunner
from llmrouter.server.ratelimit import RateLimiter, TokenBucket
from llmrouter.server.settings import GatewaySettings

__all__ = [
    "GatewayRunner",
    "GatewaySettings",
    "KeyStore",
    "RateLimiter",
    "TokenBucket",
    "check_bind",
    "create_app",
    "run",
    "serve",
]
