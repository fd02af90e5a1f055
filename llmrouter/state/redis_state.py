"""Shared state in Redis: :class:`RedisState` (sync client) and :class:`AsyncRedisState`
(async client and gateway), over redis-py (its asyncio client for the async one).

Keys, all under ``llmrouter:<namespace>:`` and all expiring (PX or PEXPIRE on every write);
backends and API key ids appear only as 16-hex-digit SHA-256 digests, never as names, URLs or
message content:

====================================  =========================================================
``breaker:<b>:open``                  exists while backend ``<b>``'s breaker is open; PX = the
                                      cooldown, so PTTL is the cooldown left
``breaker:<b>:probe``                 the cluster's one half-open probe (SET NX PX)
``lock:health:<b>``                   the one active health prober (SET NX PX = the interval)
``budget:<unix second>``              hash ``r`` (requests) / ``s`` (retries spent); PX = ttl
``balancer:<b>``                      hash, one field per process's balancer: ``<Redis ms>
                                      <latency s or -> <in flight>``; PX = 6 s, and fields
                                      older than 5 s (Redis clock) are dropped when read
``ratelimit:<limit>:<key id>``        token bucket hash ``level`` / ``updated`` (Redis TIME)
channel ``breaker``                   ``open <b> <ms> <origin>`` / ``close <b> <origin>``
====================================  =========================================================

Redis down or slow never fails a request: every command has a 50 ms socket timeout, redis-py's
own retries are off, and the first failure switches the store to in-process state for
``backoff`` seconds (one WARNING on the ``llmrouter`` logger per outage). The subscriber
reconnects every ``backoff`` seconds; when it succeeds the store is shared again (one INFO line)
and re-reads which breakers are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from llmrouter.config import _redact_userinfo
from llmrouter.policy import Balancer, CircuitBreaker, RetryBudget
from llmrouter.state.keys import key_id, parse_state_url
from llmrouter.state.shared import (
    FLUSH_INTERVAL,
    STALE_AFTER,
    Backplane,
    SharedBalancer,
    SharedBreaker,
    SharedBudget,
)

__all__ = ["AsyncRedisState", "RedisState"]

logger = logging.getLogger("llmrouter")

T = TypeVar("T")

# The half-open probe: refused while the breaker is still open (unless forced: every backend
# of the caller is open), else SET NX PX. Returns 0 (granted), the PTTL left, or -1 (taken).
ACQUIRE_PROBE = """
if ARGV[2] == '0' then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then return left end
end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[1]) then return 0 end
return -1
"""

# One token-bucket step, atomically, on the server's clock (so gateways on several machines
# agree). ARGV: capacity, refill per second, amount, 'take' | 'adjust', expiry ms.
BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'level', 'updated')
local level = tonumber(v[1])
local updated = tonumber(v[2])
if level == nil or updated == nil then level = cap; updated = now end
if now > updated then
  level = math.min(cap, level + (now - updated) * rate)
  updated = now
end
local wait = 0
if ARGV[4] == 'take' then
  amount = math.min(amount, cap)
  if level >= amount then level = level - amount else wait = (amount - level) / rate end
else
  level = math.min(cap, level - amount)
end
redis.call('HSET', KEYS[1], 'level', string.format('%.6f', level),
           'updated', string.format('%.6f', updated))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return string.format('%.6f', wait)
"""

# Balancers' shared view, on the server's clock: for each backend hash in KEYS, write this
# balancer's entry (ARGV[3 + i]; '' writes nothing), drop entries older than ARGV[2] ms, and
# return the others' entries. ARGV: this balancer's field, staleness ms, expiry ms, values...
BALANCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local mine = ARGV[3 + i]
  if mine ~= nil and mine ~= '' then
    redis.call('HSET', key, ARGV[1], string.format('%.0f', now) .. ' ' .. mine)
    redis.call('PEXPIRE', key, ARGV[3])
  end
  local rows = redis.call('HGETALL', key)
  local fresh = {}
  for j = 1, #rows, 2 do
    local at = tonumber(string.match(rows[j + 1], '^(%d+) '))
    if at == nil or now - at > stale then
      redis.call('HDEL', key, rows[j])
    elseif rows[j] ~= ARGV[1] then
      fresh[#fresh + 1] = rows[j + 1]
    end
  end
  out[i] = fresh
end
return out
"""

_SHA = {src: hashlib.sha1(src.encode()).hexdigest() for src in (ACQUIRE_PROBE, BUCKET)}


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class _RedisBase:
    """What the sync and async stores share: keys, messages, the down/up switch."""

    def __init__(self, url: str, *, timeout: float = 0.05, backoff: float = 1.0) -> None:
        self.url, self.namespace = parse_state_url(url)
        self.display = _redact_userinfo(self.url)
        self.timeout = timeout
        self.backoff = backoff
        self.prefix = f"llmrouter:{self.namespace}:"
        self.channel = self.prefix + "breaker"
        self.origin = uuid.uuid4().hex[:12]
        self._breakers: dict[str, list[SharedBreaker]] = {}
        self._balancers: list[SharedBalancer] = []
        self._balanced_at = -FLUSH_INTERVAL
        self._down_until = 0.0
        self._down = False
        self._flag = threading.Lock()
        self._closed = False
        self.subscribed = False  # listening for other processes' breaker changes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display!r}, namespace={self.namespace!r})"

    def _client_options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry_on_timeout": False,
        }

    # -- up / down ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return not self._closed and time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        with self._flag:
            self._down_until = time.monotonic() + self.backoff
            if self._down:
                return
            self._down = True
        logger.warning(
            "shared state at %s unreachable (%s); using in-process state until it returns",
            self.display,
            type(exc).__name__,
        )

    def _recovered(self) -> bool:
        """The store answered: clear the outage (``True`` when there was one)."""
        with self._flag:
            self._down_until = 0.0
            if not self._down:
                return False
            self._down = False
        logger.info("shared state at %s reachable again", self.display)
        return True

    # -- keys and messages ----------------------------------------------------------------

    def _open_key(self, key: str) -> str:
        return f"{self.prefix}breaker:{key}:open"

    def _probe_key(self, key: str) -> str:
        return f"{self.prefix}breaker:{key}:probe"

    def _budget_keys(self, ttl: float) -> list[str]:
        now = int(time.time())
        return [f"{self.prefix}budget:{now - i}" for i in range(max(int(ttl), 1))]

    def breaker(self, backend: str, local: CircuitBreaker) -> SharedBreaker:
        return self._register(backend, local)

    def budget(self, local: RetryBudget) -> SharedBudget:
        return SharedBudget(local, self)  # type: ignore[arg-type]

    def balancer(self, names: list[str], local: Balancer) -> Balancer | SharedBalancer:
        return self._register_balancer(names, local)

    def _register(self, backend: str, local: CircuitBreaker) -> SharedBreaker:
        key = key_id(backend)
        shared = SharedBreaker(local, key, cast(Backplane, self))
        self._breakers.setdefault(key, []).append(shared)
        return shared

    def _register_balancer(self, names: list[str], local: Balancer) -> Balancer | SharedBalancer:
        # One replica, or a rotation, has nothing to learn from the others: keep it local.
        if len(local.weights) < 2 or local.strategy == "round_robin":
            return local
        field = f"{self.origin}.{len(self._balancers)}"
        shared = SharedBalancer(local, [key_id(n) for n in names], field, cast(Backplane, self))
        self._balancers.append(shared)
        return shared

    def _balancer_calls(self, write: bool) -> list[tuple[SharedBalancer, list[str], list[Any]]]:
        """The BALANCE script calls to add to a pipeline: the balancers' entries written and
        the others' read back (``write``: at most twice per flush interval, for all clients
        sharing this store), or only read (``write=False``, on (re)subscribing)."""
        if not self._balancers:
            return []
        if write:
            now = time.monotonic()
            if now - self._balanced_at < FLUSH_INTERVAL / 2:
                return []
            self._balanced_at = now
        calls = []
        for shared in list(self._balancers):
            keys = [f"{self.prefix}balancer:{key}" for key in shared.keys]
            values = shared.snapshot() if write else [""] * len(keys)
            args = [shared.field, _ms(STALE_AFTER), _ms(STALE_AFTER + 1), *values]
            calls.append((shared, keys, args))
        return calls

    @staticmethod
    def _absorb(calls: list[tuple[SharedBalancer, list[str], list[Any]]], results: Any) -> None:
        for (shared, _, _), rows in zip(calls, results, strict=False):
            if isinstance(rows, list):
                shared.absorb(rows)

    def _dispatch(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        parts = text.split()
        if len(parts) < 3 or parts[-1] == self.origin:
            return
        for shared in self._breakers.get(parts[1], ()):
            if parts[0] == "open" and len(parts) == 4:
                shared.remote_open(int(parts[2]) / 1000)
            elif parts[0] == "close":
                shared.remote_close()

    def _apply_ttls(self, keys: list[str], ttls: list[Any]) -> None:
        for key, left in zip(keys, ttls, strict=False):
            if isinstance(left, int) and left > 0:
                for shared in self._breakers.get(key, ()):
                    shared.remote_open(left / 1000)

    @staticmethod
    def _budget_pipeline(
        r: Any,
        keys: list[str],
        calls: list[tuple[SharedBalancer, list[str], list[Any]]],
        requests: int,
        spent: int,
        ttl: float,
    ) -> Any:
        """The once-a-second flush, queued on one pipeline (sync or async alike): this
        process's budget counts in, the cluster's totals and balancer views out."""
        pipe = r.pipeline(transaction=False)
        pipe.hincrby(keys[0], "r", requests)
        pipe.hincrby(keys[0], "s", spent)
        pipe.pexpire(keys[0], _ms(ttl + 1))
        for key in keys:
            pipe.hmget(key, "r", "s")
        for _, names, args in calls:
            pipe.eval(BALANCE, len(names), *names, *args)
        return pipe

    def _budget_results(
        self,
        keys: list[str],
        calls: list[tuple[SharedBalancer, list[str], list[Any]]],
        results: list[Any],
    ) -> tuple[float, float]:
        self._absorb(calls, results[3 + len(keys) :])
        return self._totals(results[3 : 3 + len(keys)])

    @staticmethod
    def _totals(rows: list[Any]) -> tuple[float, float]:
        requests = spent = 0.0
        for r, s in rows:
            requests += float(r or 0)
            spent += float(s or 0)
        return requests, spent


class RedisState(_RedisBase):
    """Shared state for the sync :class:`~llmrouter.Client`: commands run inline (one round
    trip, at most ``timeout``), the subscriber in a daemon thread."""

    def __init__(self, url: str, *, timeout: float = 0.05, backoff: float = 1.0) -> None:
        super().__init__(url, timeout=timeout, backoff=backoff)
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_mod = redis
        self._redis = redis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), **self._client_options()
        )
        self._listener: threading.Thread | None = None

    def _run(self, command: Callable[[Any], T]) -> T | None:
        if not self.active:
            return None
        try:
            result = command(self._redis)
        except Exception as exc:  # never let shared state fail a request
            self._failed(exc)
            with contextlib.suppress(Exception):  # reconnect afresh next time
                self._redis.connection_pool.disconnect()
            return None
        if self._down:
            self._recovered()
        return result

    def _script(self, r: Any, src: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return r.evalsha(_SHA[src], len(keys), *keys, *args)
        except self._redis_mod.exceptions.NoScriptError:
            return r.eval(src, len(keys), *keys, *args)

    # -- StateStore ---------------------------------------------------------------------

    def start(self) -> None:
        if self._listener is None and not self._closed:
            self._listener = threading.Thread(
                target=self._listen, name="llmrouter-state", daemon=True
            )
            self._listener.start()

    def try_lock(self, name: str, ttl: float) -> bool:
        key = f"{self.prefix}lock:{name}"
        taken = self._run(lambda r: r.set(key, self.origin, nx=True, px=_ms(ttl)))
        return True if taken is None and not self.active else bool(taken)

    def bucket(
        self, name: str, capacity: float, per_second: float, amount: float, take: bool
    ) -> float | None:
        key = f"{self.prefix}ratelimit:{name}"
        args = [capacity, per_second, amount, "take" if take else "adjust"]
        args.append(_ms(capacity / per_second + 1))
        wait = self._run(lambda r: self._script(r, BUCKET, [key], args))
        return None if wait is None else float(wait)

    def close(self) -> None:
        self._closed = True
        self._redis.close()

    # -- Backplane ------------------------------------------------------------------------

    def publish_open(self, key: str, cooldown: float) -> None:
        ms = _ms(cooldown)

        def command(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.set(self._open_key(key), self.origin, px=ms)
            pipe.publish(self.channel, f"open {key} {ms} {self.origin}")
            pipe.execute()

        self._run(command)

    def publish_close(self, key: str) -> None:
        def command(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.delete(self._open_key(key), self._probe_key(key))
            pipe.publish(self.channel, f"close {key} {self.origin}")
            pipe.execute()

        self._run(command)

    def acquire_probe(
        self, key: str, ttl: float, force: bool, done: Callable[[float | None], None]
    ) -> None:
        keys = [self._open_key(key), self._probe_key(key)]
        args = [_ms(ttl), "1" if force else "0", self.origin]
        result = self._run(lambda r: self._script(r, ACQUIRE_PROBE, keys, args))
        done(None if result is None else (-1.0 if result < 0 else result / 1000))

    def flush_budget(
        self,
        requests: int,
        spent: int,
        ttl: float,
        done: Callable[[tuple[float, float] | None], None],
    ) -> None:
        keys = self._budget_keys(ttl)
        calls = self._balancer_calls(write=True)

        def command(r: Any) -> tuple[float, float]:
            pipe = self._budget_pipeline(r, keys, calls, requests, spent, ttl)
            return self._budget_results(keys, calls, pipe.execute())

        done(self._run(command))

    # -- the subscriber -------------------------------------------------------------------

    def _listen(self) -> None:
        redis = self._redis_mod
        while not self._closed:
            sub = redis.Redis.from_url(self.url, socket_connect_timeout=self.timeout)
            pubsub = sub.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._resync()
                self._recovered()
                self.subscribed = True
                while not self._closed:
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except Exception as exc:
                self.subscribed = False
                if self._closed:
                    break
                self._failed(exc)
                with contextlib.suppress(Exception):  # the pool's connections are stale too
                    self._redis.connection_pool.disconnect()
                time.sleep(self.backoff)
            finally:
                try:
                    pubsub.close()
                    sub.close()
                except Exception:  # already broken
                    pass

    def _resync(self) -> None:
        keys = list(self._breakers)
        calls = self._balancer_calls(write=False)
        if not keys and not calls:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(self._open_key(key))
        for _, names, args in calls:
            pipe.eval(BALANCE, len(names), *names, *args)
        results = pipe.execute()
        self._apply_ttls(keys, results[: len(keys)])
        self._absorb(calls, results[len(keys) :])


class AsyncRedisState(_RedisBase):
    """Shared state for :class:`~llmrouter.AsyncClient` and the gateway: the router's calls
    never wait on Redis (commands run as tasks and call back); the subscriber is a task."""

    def __init__(self, url: str, *, timeout: float = 0.05, backoff: float = 1.0) -> None:
        super().__init__(url, timeout=timeout, backoff=backoff)
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import NoScriptError

        self._aioredis = aioredis
        self._no_script = NoScriptError
        self._redis = aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), **self._client_options()
        )
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _run(self, command: Callable[[Any], Awaitable[T]]) -> T | None:
        if not self.active:
            return None
        try:
            result = await asyncio.wait_for(command(self._redis), self.timeout * 4)
        except Exception as exc:  # never let shared state fail a request
            self._failed(exc)
            with contextlib.suppress(Exception):  # reconnect afresh next time
                await self._redis.connection_pool.disconnect()
            return None
        if self._down:
            self._recovered()
        return result

    def _spawn(
        self,
        command: Callable[[Any], Awaitable[T]],
        done: Callable[[T | None], None] | None = None,
    ) -> None:
        if not self.active:
            if done is not None:
                done(None)
            return

        async def job() -> None:
            result = await self._run(command)
            if done is not None:
                done(result)

        try:
            task = asyncio.get_running_loop().create_task(job())
        except RuntimeError:  # no event loop here: decide locally
            if done is not None:
                done(None)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _script(self, r: Any, src: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await r.evalsha(_SHA[src], len(keys), *keys, *args)
        except self._no_script:
            return await r.eval(src, len(keys), *keys, *args)

    # -- AsyncStateStore --------------------------------------------------------------------

    def start(self) -> None:
        if self._listener is None and not self._closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # started by the first request, inside the loop
            self._listener = loop.create_task(self._listen())

    async def try_lock(self, name: str, ttl: float) -> bool:
        key = f"{self.prefix}lock:{name}"

        async def command(r: Any) -> Any:
            return await r.set(key, self.origin, nx=True, px=_ms(ttl))

        taken = await self._run(command)
        return True if taken is None and not self.active else bool(taken)

    async def bucket(
        self, name: str, capacity: float, per_second: float, amount: float, take: bool
    ) -> float | None:
        key = f"{self.prefix}ratelimit:{name}"
        args = [capacity, per_second, amount, "take" if take else "adjust"]
        args.append(_ms(capacity / per_second + 1))

        async def command(r: Any) -> Any:
            return await self._script(r, BUCKET, [key], args)

        wait = await self._run(command)
        return None if wait is None else float(wait)

    async def aclose(self) -> None:
        self._closed = True
        pending = [t for t in (self._listener, *self._tasks) if t is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._listener = None
        await self._redis.aclose()

    # -- Backplane ------------------------------------------------------------------------

    def publish_open(self, key: str, cooldown: float) -> None:
        ms = _ms(cooldown)

        async def command(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.set(self._open_key(key), self.origin, px=ms)
            pipe.publish(self.channel, f"open {key} {ms} {self.origin}")
            await pipe.execute()

        self._spawn(command)

    def publish_close(self, key: str) -> None:
        async def command(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.delete(self._open_key(key), self._probe_key(key))
            pipe.publish(self.channel, f"close {key} {self.origin}")
            await pipe.execute()

        self._spawn(command)

    def acquire_probe(
        self, key: str, ttl: float, force: bool, done: Callable[[float | None], None]
    ) -> None:
        keys = [self._open_key(key), self._probe_key(key)]
        args = [_ms(ttl), "1" if force else "0", self.origin]

        async def command(r: Any) -> float:
            result = int(await self._script(r, ACQUIRE_PROBE, keys, args))
            return -1.0 if result < 0 else result / 1000

        self._spawn(command, done)

    def flush_budget(
        self,
        requests: int,
        spent: int,
        ttl: float,
        done: Callable[[tuple[float, float] | None], None],
    ) -> None:
        keys = self._budget_keys(ttl)
        calls = self._balancer_calls(write=True)

        async def command(r: Any) -> tuple[float, float]:
            pipe = self._budget_pipeline(r, keys, calls, requests, spent, ttl)
            return self._budget_results(keys, calls, await pipe.execute())

        self._spawn(command, done)

    # -- the subscriber -------------------------------------------------------------------

    async def _listen(self) -> None:
        while not self._closed:
            sub = self._aioredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout)
            pubsub = sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._resync(sub)
                self._recovered()
                self.subscribed = True
                while not self._closed:
                    message = await pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed = False
                if self._closed:
                    break
                self._failed(exc)
                with contextlib.suppress(Exception):  # the pool's connections are stale too
                    await self._redis.connection_pool.disconnect()
                await asyncio.sleep(self.backoff)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
                    await sub.aclose()
                except Exception:  # already broken
                    pass

    async def _resync(self, r: Any) -> None:
        keys = list(self._breakers)
        calls = self._balancer_calls(write=False)
        if not keys and not calls:
            return
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(self._open_key(key))
        for _, names, args in calls:
            pipe.eval(BALANCE, len(names), *names, *args)
        results = await pipe.execute()
        self._apply_ttls(keys, results[: len(keys)])
        self._absorb(calls, results[len(keys) :])
