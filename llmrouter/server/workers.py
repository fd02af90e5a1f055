"""``llmrouter serve --workers N``: N gateway processes on one port, and their supervisor.

The supervisor (this process) binds and listens on the port once, then forks N workers that
inherit that one listening socket: the kernel hands each new connection to whichever worker
accepts it first, and a connection waiting in the backlog belongs to none of them, so a worker
that dies loses only the requests it had already accepted; the others go on serving at once.
(``SO_REUSEPORT`` would give each worker its own backlog, and the connections queued in a dead
worker's backlog would be reset.) Forking needs POSIX; the workers are forked before any event
loop or thread exists in the supervisor.

The supervisor:

* restarts a worker that dies (a crash, the OOM killer, ``kill -9``);
* passes SIGTERM and SIGINT on to every worker, each of which drains as a single gateway does
  (no new requests, in-flight ones get the grace period, streams then end with an error event),
  and exits 0 once they are gone;
* gives up, stops the others and exits 1 when workers keep dying: ``max_deaths`` deaths within
  ``death_window_s`` seconds (a bad deployment, not a one-off crash).

Limits across workers: with shared state (``--state redis://...`` / ``LLMROUTER_STATE``) the
per-key request and token limits, the breakers and the retry budget are shared exactly as
between gateway replicas. Without it each worker holds its own, so :func:`worker_settings`
gives each worker ``1/N`` of the per-key limits (rounded up) and each breaker opens per worker.
The per-key in-flight cap and the connection cap are always per process, so they are divided by
``N`` too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from llmrouter.errors import ConfigError
from llmrouter.server.settings import GatewaySettings

__all__ = ["Supervisor", "WorkerTarget", "resolve_workers", "usable_cpus", "worker_settings"]


def _cgroup_cpus() -> float | None:
    """The CPU quota of this container, in CPUs (cgroup v2 ``cpu.max``, else v1 CFS)."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            v1_quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            v1_period = int(f.read())
    except (OSError, ValueError):
        return None
    return v1_quota / v1_period if v1_quota > 0 and v1_period > 0 else None


def usable_cpus() -> int:
    """The CPUs this process may really use: its affinity mask, capped by a cgroup quota.

    ``os.cpu_count()`` counts the host's CPUs, which in a container or under ``taskset`` can be
    many more than the process is allowed to run on.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def resolve_workers(value: str | int) -> int:
    """``"auto"`` -> :func:`usable_cpus`; otherwise a positive number of workers.

    Raises:
        ConfigError: not ``auto`` and not a positive integer.
    """
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return usable_cpus()
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"workers: expected a number or 'auto', got {value!r}") from None
    if value < 1:
        raise ConfigError(f"workers: expected at least 1, got {value}")
    return value


def _share(value: int | None, workers: int) -> int | None:
    return None if value is None else max(1, math.ceil(value / workers))


def worker_settings(settings: GatewaySettings, workers: int, shared: bool) -> GatewaySettings:
    """One worker's settings when ``workers`` processes serve together.

    Args:
        shared: whether the limits live in a shared store (Redis): then the per-key request
            and token limits stay whole, since every worker draws from the same buckets.
    """
    if workers == 1:
        return settings
    changes: dict[str, Any] = {
        "max_connections": _share(settings.max_connections, workers),
        "max_in_flight_per_key": _share(settings.max_in_flight_per_key, workers),
    }
    if not shared:
        changes["requests_per_minute"] = _share(settings.requests_per_minute, workers)
        changes["tokens_per_minute"] = _share(settings.tokens_per_minute, workers)
    return dataclasses.replace(settings, **changes)


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The one listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


WorkerTarget = Callable[[GatewaySettings, socket.socket, str, str], None]


def _worker_main(
    target: WorkerTarget, settings: GatewaySettings, sock: socket.socket, host: str, loop: str
) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    target(settings, sock, host, loop)


class Supervisor:
    """Runs ``workers`` gateway processes on one listening socket and keeps them running.

    Args:
        settings: the gateway settings (each worker gets :func:`worker_settings` of them).
        host / port: where to listen (``port=0``: any free port, see :attr:`port`).
        workers: how many processes.
        target: what a worker runs, ``target(settings, sock, host, loop)``: serve the gateway
            on the listening ``sock`` until SIGTERM (``llmrouter.server.app`` gives it).
        max_deaths / death_window_s: give up (exit 1) after this many worker deaths within
            this many seconds.
        loop: the workers' event loop (see :func:`~llmrouter.server.app.install_loop`).
        announce: where status lines go (stdout for ``llmrouter serve``).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        host: str,
        port: int,
        workers: int,
        target: WorkerTarget,
        *,
        max_deaths: int = 5,
        death_window_s: float = 30.0,
        loop: str = "auto",
        announce: Callable[[str], None] = print,
    ) -> None:
        from llmrouter.config import state_url

        self.workers = workers
        self.host = host
        self.max_deaths = max_deaths
        self.death_window_s = death_window_s
        self.announce = announce
        self.loop = loop
        self.target = target
        state = settings.client_options.get("state", settings.state) or state_url()
        self.settings = worker_settings(settings, workers, shared=state is not None)
        self.shared = state is not None
        self.sock = listen(host, port)
        self.port: int = self.sock.getsockname()[1]
        self._ctx = multiprocessing.get_context("fork")
        self._procs: dict[int, Any] = {}  # slot -> Process
        self._deaths: deque[float] = deque()
        self._stopping = False
        self.restarts = 0

    def _start(self, slot: int) -> None:
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self.target, self.settings, self.sock, self.host, self.loop),
            name=f"llmrouter-worker-{slot}",
            daemon=False,
        )
        proc.start()
        self._procs[slot] = proc

    def pids(self) -> list[int]:
        """The workers' process ids, by slot."""
        return [p.pid for _, p in sorted(self._procs.items())]

    def _stop_workers(self, grace: float) -> None:
        for proc in self._procs.values():
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self._procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self._procs.values():
            if proc.is_alive():
                proc.kill()
                proc.join()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or until workers keep dying (1)."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)

        def stop(_sig: int, _frame: Any) -> None:
            self._stopping = True
            with contextlib.suppress(OSError):
                wake_w.send(b"x")

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self.workers):
                self._start(slot)
            self._announce_start()
            return self._watch(wake_r)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            self.sock.close()

    def _announce_start(self) -> None:
        limits = (
            "per-key limits and breakers shared through the state store"
            if self.shared
            else "no shared state: each worker holds 1/N of the per-key limits and its own breakers"
        )
        self.announce(
            f"llmrouter gateway listening on http://{self.host}:{self.port} with "
            f"{self.workers} workers (pids {', '.join(map(str, self.pids()))}); {limits}"
        )

    def _watch(self, wake: socket.socket) -> int:
        while not self._stopping:
            sentinels = {p.sentinel: slot for slot, p in self._procs.items()}
            ready = wait([*sentinels, wake])
            if self._stopping:
                break
            for fd in ready:
                slot = sentinels.get(fd)
                if slot is None:
                    continue
                proc = self._procs[slot]
                proc.join()
                now = time.monotonic()
                self._deaths.append(now)
                while self._deaths and now - self._deaths[0] > self.death_window_s:
                    self._deaths.popleft()
                if len(self._deaths) >= self.max_deaths:
                    self.announce(
                        f"llmrouter gateway: {len(self._deaths)} worker deaths within "
                        f"{self.death_window_s:g} s; giving up"
                    )
                    self._stop_workers(self.settings.grace_s + 3.0)
                    return 1
                self._start(slot)
                self.restarts += 1
                self.announce(
                    f"llmrouter gateway: worker {slot} (pid {proc.pid}) exited with "
                    f"{proc.exitcode}; restarted as pid {self._procs[slot].pid}"
                )
        self.announce(f"llmrouter gateway: shutting down (grace {self.settings.grace_s:g} s)")
        self._stop_workers(self.settings.grace_s + 3.0)
        sys.stdout.flush()
        return 0
