"""How fast a live run may send: adaptive concurrency (AIMD), tokens per minute, and the gate
that puts a provider's limits in front of each HTTP attempt.

`AdaptiveConcurrency` is TCP Reno for API calls: the window of calls in flight starts
modest and grows by one per success (slow start) until the first 429/503/529, then is halved
and grows by one per window of successes. A refusal also teaches it the rate the server
allows (what completed in the last second, less a tenth), at which it then paces sends, and
its Retry-After holds every new send until then: a refused burst is not re-sent at once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

OVERLOADED = frozenset({429, 503, 529})


class AdaptiveConcurrency:
    """An AIMD window over calls in flight, shared by every conversation of one provider."""

    def __init__(self, start: int = 8, ceiling: int = 1024):
        self.window = float(min(start, ceiling))
        self.ceiling = ceiling
        self.in_flight = 0
        self.slow_start = True
        self.pace: float | None = None  # requests/s learnt from the first refusal
        self.hold_until = 0.0
        self.next_at = 0.0
        self.last_cut = 0.0
        self.cuts = 0
        self._done: collections.deque[float] = collections.deque()  # completions, last second
        self._free = asyncio.Condition()

    async def acquire(self) -> float:
        """Wait for a slot (and the pace and any hold); returns when the call may be sent."""
        async with self._free:
            await self._free.wait_for(lambda: self.in_flight < int(self.window))
            self.in_flight += 1
        while True:  # each waiter reserves its own paced moment, so none go together
            now = time.monotonic()
            at = max(now, self.hold_until, self.next_at if self.pace else 0.0)
            if self.pace:
                self.next_at = at + 1.0 / self.pace
            if at <= now:
                return now
            await asyncio.sleep(at - now)
            if self.hold_until <= time.monotonic():  # no refusal moved the hold meanwhile
                return time.monotonic()

    async def release(self, sent_at: float, status: int | None,
                      retry_after: float | None = None) -> None:
        """Free the slot of a call sent at `sent_at`; `status` None: no HTTP answer."""
        now = time.monotonic()
        if status in OVERLOADED:
            if retry_after:
                self.hold_until = max(self.hold_until, now + retry_after)
            if sent_at >= self.last_cut:  # one cut per episode: not one per refused call
                self.last_cut, self.cuts, self.slow_start = now, self.cuts + 1, False
                self.window = max(1.0, self.window / 2)
                while self._done and self._done[0] <= now - 1.0:
                    self._done.popleft()
                self.pace = max(1.0, 0.9 * len(self._done))
        elif status is not None and status < 400:
            self._done.append(now)
            if len(self._done) > 4 * self.ceiling:
                self._done.popleft()
            self.window = min(float(self.ceiling),
                              self.window + (1.0 if self.slow_start else 1.0 / self.window))
            if self.pace:  # probe: +1% a second at any rate, so a cut is ~10 s away
                self.pace += 0.01
        async with self._free:
            self.in_flight -= 1
            self._free.notify_all()


class TokenLimiter:
    """At most `per_minute` tokens a minute: a bucket refilled evenly, one minute deep. A call
    takes its estimate before it is sent and the difference back once its usage is known."""

    def __init__(self, per_minute: float):
        self.capacity = per_minute
        self.per_second = per_minute / 60.0
        self.level = per_minute
        self.at = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.per_second)
        self.at = now

    async def take(self, tokens: float) -> None:
        tokens = min(tokens, self.capacity)  # a call bigger than a minute still goes, alone
        async with self.lock:  # in order: a big call is not starved by small ones
            self._refill()
            if self.level < tokens:
                await asyncio.sleep((tokens - self.level) / self.per_second)
                self._refill()
            self.level -= tokens

    def correct(self, estimated: float, used: float) -> None:
        """Give back (or take) the difference between the estimate and the reported usage."""
        self._refill()
        self.level = min(self.capacity, self.level + estimated - used)


def estimate_tokens(content: bytes) -> float:
    """A request's prompt tokens, guessed before it is sent: ~4 bytes of JSON a token."""
    return len(content) / 4


@dataclass
class Gate:
    """A provider's limits in front of each live HTTP attempt; made once per run."""

    rate: Callable[[], Awaitable[None]] | None = None  # the requests/minute spacer
    tokens: TokenLimiter | None = None
    adaptive: AdaptiveConcurrency | None = None

    async def enter(self, content: bytes) -> tuple[float, float]:
        """Wait until `content` may be sent; returns the ticket `leave` takes."""
        sent_at = time.monotonic()
        if self.adaptive is not None:
            sent_at = await self.adaptive.acquire()
        if self.rate is not None:
            await self.rate()
        estimate = estimate_tokens(content)
        if self.tokens is not None:
            await self.tokens.take(estimate)
        return sent_at, estimate

    async def leave(self, ticket: tuple[float, float], status: int | None,
                    used_tokens: int | None, retry_after: float | None) -> None:
        """After the attempt: correct the token estimate, free the adaptive slot."""
        sent_at, estimate = ticket
        if self.tokens is not None:
            self.tokens.correct(estimate, estimate if used_tokens is None else used_tokens)
        if self.adaptive is not None:
            await self.adaptive.release(sent_at, status, retry_after)
