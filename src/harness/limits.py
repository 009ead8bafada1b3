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
    """The calls in flight and the sends a second of one provider, shared by its conversations.

    Two controls, for the two ways a server says "too much":
    - too many at once (503, 529): an AIMD window over the calls in flight, as TCP Reno's. It
      grows by one per success (slow start) until the first such refusal, is then halved once
      per refused burst, and grows by one per window of successes.
    - too many a second (429, and 503/529 too): a pace in sends a second, learnt from what the
      server let through, i.e. the answered calls sent in the second before a refusal came
      back, counted once they all are, less 3%. It then rises, slowly
      at first (2% a second) and faster the longer no refusal comes, so a changed limit is
      found again, and the next refusal measures it anew.
    A refusal's Retry-After holds every new send until then, so a refused burst is not re-sent
    at once.
    """

    MARGIN = 0.97  # of the measured limit: paced evenly below it, the server need not refuse
    PROBE = 0.02  # the pace's rise a second, times (1 + seconds since the last refusal)

    def __init__(self, start: int = 8, ceiling: int = 1024):
        self.window = float(min(start, ceiling))
        self.ceiling = ceiling
        self.in_flight = 0
        self.slow_start = True
        self.pace: float | None = None  # sends a second, once a refusal has taught it
        self.hold_until = 0.0
        self.next_at = 0.0
        self.last_cut = 0.0  # when the window was last halved
        self.last_refusal = 0.0  # when the pace was last measured
        self.cuts = 0
        self._measuring: float | None = None  # when a refusal being measured came back
        self._probed_at = 0.0
        self._answered: collections.deque[float] = collections.deque()  # send times, last 5 s
        self._flying: collections.Counter[float] = collections.Counter()  # send times, out
        self._free = asyncio.Condition()
        self._pacer = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for a slot (and the pace and any hold); returns when the call may be sent."""
        async with self._free:
            await self._free.wait_for(lambda: self.in_flight < int(self.window))
            self.in_flight += 1
        async with self._pacer:  # in turn: only the next send waits for the pace, so a
            while True:  # changed pace or hold applies at once, not after a queue of sends
                now = time.monotonic()
                at = max(now, self.hold_until, self.next_at if self.pace else 0.0)
                if at <= now:
                    break
                await asyncio.sleep(at - now)
            if self.pace:  # a late wake-up may catch up by at most 50 ms worth of sends
                self.next_at = max(self.next_at, now - 0.05) + 1.0 / self.pace
        self._flying[now] += 1
        return now

    def _allowed(self, until: float) -> int:
        """How many answered calls were sent in the second up to `until`."""
        return sum(until - 1.0 < t <= until for t in self._answered)

    async def release(self, sent_at: float, status: int | None,
                      retry_after: float | None = None) -> None:
        """Free the slot of a call sent at `sent_at`; `status` None: no HTTP answer."""
        now = time.monotonic()
        if self._flying[sent_at] > 1:
            self._flying[sent_at] -= 1
        else:
            del self._flying[sent_at]
        if status in OVERLOADED:
            if retry_after:
                self.hold_until = max(self.hold_until, now + retry_after)
            if self._measuring is None and sent_at >= self.last_refusal:
                # one measure per refused burst; until it is done, what is back already
                self._measuring = self.last_refusal = now
                self.pace = max(1.0, self.MARGIN * self._allowed(now))
            if status != 429 and sent_at >= self.last_cut:  # one cut per refused burst
                self.last_cut, self.cuts, self.slow_start = now, self.cuts + 1, False
                self.window = max(1.0, self.window / 2)
        elif status is not None and status < 400:
            self._answered.append(sent_at)
            while self._answered[0] < now - 5.0:
                self._answered.popleft()
            self.window = min(float(self.ceiling),
                              self.window + (1.0 if self.slow_start else 1.0 / self.window))
            if self.pace and self._measuring is None:
                quiet = now - self.last_refusal
                self.pace *= 1.0 + self.PROBE * (1.0 + quiet) * (now - self._probed_at)
                self._probed_at = now
        if self._measuring is not None and min(self._flying, default=now) > self._measuring:
            # every call sent before the refusal came back is back. The second before the
            # refusal's answer, not before its send: a busy client's burst reaches the server
            # in another order than it was sent, and in a steady flow what the server let in
            # after the refused call makes up for what left its window
            self.pace = max(1.0, self.MARGIN * self._allowed(self._measuring))
            self._measuring, self._probed_at = None, now
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
