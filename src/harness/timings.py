"""Streaming timings: stamped by harness's own transport as a stream arrives, kept in the
cassette as one response header, and turned into the latency columns of a result row.

Every stamp is milliseconds since the request was sent: `ttfb` the response's status line
and headers, `ttft` the first event carrying output (reasoning or content), `ttfc` the first
content after any reasoning, `last` the last event carrying output, `end` the end of the
body. Which event carries output is the protocol module's `token_kind`; how its stream is
framed, its `STREAM_NDJSON`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from types import ModuleType

import httpx

from .providers._common import StreamScanner
from .transport import Client

HEADER = "x-harness-timings"


@dataclass(frozen=True, slots=True)
class Timings:
    """The stamps of one streamed exchange, in ms since the request was sent; None = not seen."""

    ttfb: float | None = None
    ttft: float | None = None
    ttfc: float | None = None
    last: float | None = None
    end: float | None = None

    def header(self) -> str:
        """`ttfb=12.3;ttft=45.6;...` (stamps not seen are left out): one header value."""
        return ";".join(f"{f.name}={getattr(self, f.name):.1f}" for f in fields(self)
                        if getattr(self, f.name) is not None)

    @classmethod
    def parse(cls, value: str | None) -> Timings | None:
        """The inverse of `header`; None for no header, and unknown or bad parts are skipped."""
        if not value:
            return None
        known, stamps = {f.name for f in fields(cls)}, {}
        for part in value.split(";"):
            name, _, number = part.strip().partition("=")
            if name in known:
                try:
                    stamps[name] = float(number)
                except ValueError:
                    continue
        return cls(**stamps)


async def send_streamed(client: Client | httpx.AsyncClient, request: httpx.Request, adapter: ModuleType,
                        started: float) -> tuple[httpx.Response, bytes, Timings]:
    """Send `request` and read its streamed body as it arrives, stamping each step.

    Returns the response (body consumed), the decoded body and the stamps; `started` is the
    `time.perf_counter()` of the send. A transport error mid-stream propagates.
    """
    def now() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    response = await client.send(request, stream=True)
    ttfb = now()
    scanner = StreamScanner(adapter.STREAM_NDJSON)
    token_kind = adapter.token_kind
    parts: list[bytes] = []
    first = content = last = None
    try:
        async for chunk in response.aiter_bytes():
            at = now()
            parts.append(chunk)
            for event in scanner.feed(chunk):
                kind = token_kind(event)
                if kind is not None:
                    first = at if first is None else first
                    last = at
                    if kind == "content" and content is None:
                        content = at
        end = now()
        for event in scanner.close():  # a last event without its separator ends with the body
            if (kind := token_kind(event)) is not None:
                first, last = end if first is None else first, end
                content = end if kind == "content" and content is None else content
    finally:
        await response.aclose()
    return response, b"".join(parts), Timings(ttfb, first, content, last, end)


_NOT_STREAMED = Timings()  # frozen: one serves every turn that was not a stream


def columns(timings: Timings | None, latency_ms: float | None,
            output_tokens: int | None) -> dict[str, float | None]:
    """The latency columns of a row: `e2e_ms` (= latency_ms), `ttfb_ms`, `ttft_ms`, `ttfc_ms`,
    `itl_ms` = (last - first output) / (output_tokens - 1), `output_tokens_per_s` =
    output_tokens / e2e. Token counts are the provider's (a stream's usage event), never a
    count of chunks."""
    t = timings or _NOT_STREAMED  # the usual case: shared, not a Timings made per turn
    itl = None
    if t.ttft is not None and t.last is not None and output_tokens is not None and output_tokens > 1:
        itl = round((t.last - t.ttft) / (output_tokens - 1), 3)
    rate = None
    if latency_ms and output_tokens is not None and latency_ms > 0:
        rate = round(output_tokens / (latency_ms / 1000), 3)
    return {"e2e_ms": latency_ms, "ttfb_ms": t.ttfb, "ttft_ms": t.ttft, "ttfc_ms": t.ttfc,
            "itl_ms": itl, "output_tokens_per_s": rate}
