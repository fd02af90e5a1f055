"""A client process for the shared-state tests and bench: it runs commands from its parent.

Started with ``multiprocessing`` (spawn): ``worker(conn, urls, state_url, cooldown[,
balancing])`` builds a sync :class:`~llmrouter.Client` over ``urls`` whose breakers open at the
first failure, then answers commands sent over ``conn``:

* ``("request", n)`` -> the backends that served ``n`` requests (``"error"`` for a failure);
* ``("request_for", seconds)`` -> the same, for requests sent one after another for ``seconds``;
* ``("wait", state, timeout)`` -> seconds until the first backend's breaker read ``state``
  (``None`` if it never did);
* ``("watch", state, timeout)`` -> ``time.time()`` when it read ``state`` (cross-process timing);
* ``("exit",)``.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from typing import Any


def worker(
    conn: Connection,
    urls: str,
    state_url: str,
    cooldown: float,
    balancing: str = "least_outstanding",
) -> None:
    from llmrouter import Client, LLMRouterError
    from llmrouter.policy import CircuitBreaker, RetryPolicy

    client = Client(
        urls,
        state=state_url,
        balancing=balancing,  # type: ignore[arg-type]
        retry_policy=RetryPolicy.testing(max_retries=0),
        circuit_breaker=lambda: CircuitBreaker(failure_threshold=1, cooldown=cooldown),
    )
    breaker = client._router.members[0].breaker
    store = client._router._state
    assert store is not None
    store.start()
    deadline = time.monotonic() + 10
    while not getattr(store, "subscribed", True) and time.monotonic() < deadline:
        time.sleep(0.005)
    conn.send("ready")
    while True:
        command: Any = conn.recv()
        if command[0] == "exit":
            break
        if command[0] in ("request", "request_for"):
            served: list[str] = []
            until = time.monotonic() + command[1]
            while len(served) < command[1] if command[0] == "request" else time.monotonic() < until:
                try:
                    resp = client.chat.completions.create(
                        messages=[{"role": "user", "content": "hi"}], max_tokens=4
                    )
                    served.append(resp.route.backend)
                except LLMRouterError:
                    served.append("error")
            conn.send(served)
        elif command[0] in ("wait", "watch"):
            start = time.monotonic()
            deadline = start + command[2]
            while breaker.state != command[1] and time.monotonic() < deadline:
                time.sleep(0.0005)
            if breaker.state != command[1]:
                conn.send(None)
            else:
                conn.send(time.monotonic() - start if command[0] == "wait" else time.time())
    client.close()
    conn.close()
