"""An HTTP/1.1 transport for httpx on asyncio streams, with an O(1) keep-alive pool.

Why it exists: httpcore's connection pool scans every connection on every request and every
response close (`_assign_requests_to_connections`), so at a few hundred calls in flight the
pool, not the network, bounds a live run. Here each origin keeps a stack of idle connections:
taking one and giving it back are O(1). The engine's plain calls go through `Client.post` as
bytes framed once per conversation (`Prepared`: the very bytes httpx would send) and come
back as an `Answer`, with no httpx Request or Response; a stream goes through httpx's models
on this pool; what it does not serve (other schemes, a streamed request body, proxies from
the environment: see `make_client`) goes to httpx's own transport.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator, Mapping

import httpx

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
_HEAD_LIMIT = 1 << 20  # bytes of status line + headers a response may have
Origin = tuple[bytes, bytes, int]


class _Deadlines:
    """The reads waiting under one read timeout in one loop. Waits of one length end in the
    order they began, so one timer armed for the oldest serves them all and a wait that ends
    is a dict delete. Hand-written: a `call_later` per read (a heap push, then a cancelled
    handle left in the heap) cost ~0.012 ms a call at 256 calls in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float):
        self.loop, self.timeout = loop, timeout
        self.waiters: dict[asyncio.Future, float] = {}  # insertion order is deadline order
        self.timer: asyncio.TimerHandle | None = None

    def add(self, waiter: asyncio.Future) -> None:
        deadline = self.waiters[waiter] = self.loop.time() + self.timeout
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self.timer, now = None, self.loop.time()
        while self.waiters:
            waiter, deadline = next(iter(self.waiters.items()))
            if deadline > now:
                self.timer = self.loop.call_at(deadline, self._expire)
                return
            del self.waiters[waiter]
            if not waiter.done():
                waiter.set_exception(TimeoutError())

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the bytes received so far, and a waiter woken by more.

    A protocol rather than asyncio streams: a response that arrives in one segment (most
    do) is parsed with no further await, and a read timeout is an entry in `deadlines`."""

    def __init__(self, deadlines: dict[float, _Deadlines]) -> None:
        self.deadlines = deadlines  # the pool's, by read timeout
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof, self.error = True, exc
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def fill(self, timeout: float | None) -> None:
        """Wait until more bytes arrive or the peer closes; TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        deadlines = None
        if timeout is not None:
            deadlines = self.deadlines.get(timeout)
            if deadlines is None or deadlines.loop is not loop:
                deadlines = self.deadlines[timeout] = _Deadlines(loop, timeout)
            deadlines.add(waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            if deadlines is not None:
                deadlines.waiters.pop(waiter, None)

    def usable(self, now: float) -> bool:
        return (self.transport is not None and not self.transport.is_closing() and not self.eof
                and not self.buffer and now - self.idle_since < KEEPALIVE_EXPIRY)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 on asyncio for http:// and https://; anything else to `fallback`.

    Keeps up to `max_keepalive` idle connections per origin. It does not cap connections in
    flight: the engine's workers already bound the calls in flight.
    """

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_keepalive: int = 1024,
                 fallback: httpx.AsyncBaseTransport | None = None):
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # made on first https: TLS setup costs
        self._max_keepalive = max_keepalive
        self._idle: dict[Origin, list[_Connection]] = {}
        self._fallback = fallback
        self.connections = 0  # opened so far
        self._unsent: list[tuple[asyncio.Transport, bytes]] = []
        self._deadlines: dict[float, _Deadlines] = {}

    def _fallback_transport(self) -> httpx.AsyncBaseTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(verify=self._verify)
        return self._fallback

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._ssl = self._verify
            else:  # the same trust as httpx: certifi, or SSL_CERT_FILE / SSL_CERT_DIR
                self._ssl = httpx.create_ssl_context(verify=self._verify)
                self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    async def _connect(self, request: httpx.Request | None, origin: Origin,
                       timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._ssl_context() if scheme == b"https" else None
        name = host.decode("ascii")
        connection = _Connection(self._deadlines)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().create_connection(
                    lambda: connection, name, port, ssl=tls, server_hostname=name if tls else None)
        # the exceptions and texts httpcore gives: the error rows stay what they were
        except TimeoutError:
            connection.close()
            raise httpx.ConnectTimeout("", request=request) from None
        except (socket.gaierror, ssl.SSLError) as exc:  # name not resolved, TLS refused
            connection.close()
            raise httpx.ConnectError(str(exc), request=request) from None
        except OSError:  # refused, unreachable
            connection.close()
            raise httpx.ConnectError("All connection attempts failed", request=request) from None
        self.connections += 1
        return connection

    def _write(self, transport: asyncio.Transport, message: bytes) -> None:
        """Write `message` once this turn of the event loop is done, with the others written
        in it: a server woken by the first of them is still awake for the rest (on loopback in
        a VM, waking the reader was most of what a send cost, ~0.3 ms)."""
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._write_unsent)
        self._unsent.append((transport, message))

    def _write_unsent(self) -> None:
        unsent, self._unsent = self._unsent, []
        for transport, message in unsent:
            if not transport.is_closing():  # closed meanwhile: its reader sees the close
                transport.write(message)

    def _release(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        connection.idle_since = time.monotonic()
        if len(idle) >= self._max_keepalive or not connection.usable(connection.idle_since):
            connection.close()
            return
        idle.append(connection)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https") or "transfer-encoding" in request.headers:
            return await self._fallback_transport().handle_async_request(request)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        message = b"".join([request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n",
                            *(b"%s: %s\r\n" % pair for pair in request.headers.raw), b"\r\n",
                            body])
        close = "close" in request.headers.get("connection", "").lower()
        status, reason, version, headers, stream = await self._send(
            _origin(url), message, request.extensions.get("timeout", {}), request.method, close,
            request)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": version, "reason_phrase": reason})

    async def post(self, origin: Origin, message: bytes,
                   timeouts: dict[str, float | None]) -> tuple[int, bytes, list, bytes]:
        """Send a POST already framed as bytes (`message`) and read its response whole: status,
        reason, raw headers, body (its transfer framing undone, not its content-encoding)."""
        status, reason, _, headers, stream = await self._send(origin, message, timeouts, "POST",
                                                              False, None)
        parts = []
        try:
            async for part in stream:
                parts.append(part)
        except BaseException:
            await stream.aclose()
            raise
        return status, reason, headers, parts[0] if len(parts) == 1 else b"".join(parts)

    async def _send(self, origin: Origin, message: bytes, timeouts: dict[str, float | None],
                    method: str, close: bool, request: httpx.Request | None,
                    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], _Body]:
        idle, now = self._idle.get(origin), time.monotonic()
        while idle:  # newest first: the one least likely to have been closed by the server
            connection = idle.pop()
            if not connection.usable(now):
                connection.close()
                continue
            try:
                return await self._exchange(origin, connection, message, timeouts, method, close,
                                            request)
            except _Stale:  # closed by the server while idle: the request never arrived
                connection.close()
            except BaseException:
                connection.close()
                raise
        connection = await self._connect(request, origin, timeouts.get("connect"))
        try:
            return await self._exchange(origin, connection, message, timeouts, method, close,
                                        request)
        except _Stale:
            connection.close()
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request) from None
        except BaseException:
            connection.close()
            raise

    async def _exchange(self, origin: Origin, connection: _Connection, message: bytes,
                        timeouts: dict[str, float | None], method: str, close: bool,
                        request: httpx.Request | None,
                        ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], _Body]:
        assert connection.transport is not None
        self._write(connection.transport, message)
        read_timeout, buffer = timeouts.get("read"), connection.buffer
        while True:
            try:
                while (end := buffer.find(b"\r\n\r\n")) < 0:
                    if len(buffer) > _HEAD_LIMIT:
                        raise httpx.RemoteProtocolError("Response headers too long.", request=request)
                    if connection.eof:
                        if not buffer:
                            raise _Stale()
                        raise httpx.RemoteProtocolError("Server disconnected mid-response.",
                                                        request=request)
                    await connection.fill(read_timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("", request=request) from None
            try:
                status, reason, version, headers = _parse_head(bytes(buffer[:end]))
            except ValueError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from None
            del buffer[:end + 4]
            if not 100 <= status < 200 or status == 101:
                break
        stream = _Body(self, origin, connection, method, close, request, status, headers, version,
                       read_timeout)
        return status, reason, version, headers, stream

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for deadlines in self._deadlines.values():
            deadlines.cancel()
        if self._fallback is not None:
            await self._fallback.aclose()


def _origin(url: httpx.URL) -> Origin:
    return url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80)


class _Stale(Exception):
    """A kept-alive connection the server had closed: the request may go on a fresh one."""


def _parse_head(raw: bytes) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    lines = raw.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"malformed response header: {line[:80]!r}")
        headers.append((name, value.strip()))
    return int(code), reason, version, headers


_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(7)


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives (content-length, chunked, or up to the close): each
    step yields what is buffered. Read to its end, the connection goes back to the pool."""

    def __init__(self, transport: PooledTransport, origin: Origin, connection: _Connection,
                 method: str, close: bool, request: httpx.Request | None, status: int,
                 headers: list[tuple[bytes, bytes]], version: bytes, timeout: float | None):
        self._transport, self._origin, self._connection = transport, origin, connection
        self._request, self._timeout = request, timeout
        length, chunked, keep = None, False, version == b"HTTP/1.1"
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                length = int(value) if value.isdigit() else None
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lower == b"connection" and b"close" in value.lower():
                keep = False
        if method == "HEAD" or status in (204, 304):
            length, chunked = 0, False
        if close:
            keep = False
        self._keep = keep
        self._length = self._remaining = length or 0
        self._state = (_CHUNK_SIZE if chunked else _LENGTH if length is not None
                       else _UNTIL_CLOSE)
        if self._state == _UNTIL_CLOSE:
            self._keep = False  # the body ends with the connection
        if self._state == _LENGTH and not self._remaining:
            self._finish()

    def __aiter__(self) -> _Body:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._next()
        except TimeoutError:
            raise httpx.ReadTimeout("", request=self._request) from None
        except ValueError:
            raise httpx.RemoteProtocolError("malformed chunked body", request=self._request) from None

    async def _next(self) -> bytes:
        while True:
            state = self._state
            if state == _DONE:
                raise StopAsyncIteration
            connection = self._connection
            assert connection is not None
            buffer = connection.buffer
            if state in (_LENGTH, _CHUNK_DATA):
                if buffer:
                    take = min(len(buffer), self._remaining)
                    data = bytes(buffer[:take])
                    del buffer[:take]
                    self._remaining -= take
                    if not self._remaining:
                        if state == _LENGTH:
                            self._finish()
                        else:
                            self._state = _CHUNK_END
                    return data
            elif state == _UNTIL_CLOSE:
                if buffer:
                    data = bytes(buffer)
                    buffer.clear()
                    return data
                if connection.eof:
                    self._finish()
                    continue
            elif state == _CHUNK_END:
                if len(buffer) >= 2:
                    if buffer[:2] != b"\r\n":
                        raise ValueError("chunk not followed by CRLF")
                    del buffer[:2]
                    self._state = _CHUNK_SIZE
                    continue
            else:  # a chunk-size line or a trailer line
                end = buffer.find(b"\r\n")
                if end >= 0:
                    line = bytes(buffer[:end])
                    del buffer[:end + 2]
                    if state == _CHUNK_SIZE:
                        self._remaining = int(line.split(b";", 1)[0], 16)
                        self._state = _CHUNK_DATA if self._remaining else _TRAILERS
                    elif not line:  # the blank line after the trailers
                        self._finish()
                    continue
            if connection.eof:
                if isinstance(connection.error, OSError):
                    raise httpx.ReadError(str(connection.error), request=self._request)
                # h11's texts, so that the error rows are what httpx's transport gave
                detail = (f"received {self._length - self._remaining} bytes, expected "
                          f"{self._length}" if state == _LENGTH else "incomplete chunked read")
                raise httpx.RemoteProtocolError("peer closed connection without sending complete "
                                                f"message body ({detail})", request=self._request)
            await connection.fill(self._timeout)

    def _finish(self) -> None:
        self._state = _DONE
        connection, self._connection = self._connection, None
        if connection is not None:
            if self._keep:
                self._transport._release(self._origin, connection)
            else:
                connection.close()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:  # not read to its end: what is left cannot be skipped
            self._state = _DONE
            connection.close()


class Prepared:
    """POSTs of one conversation: its URL and headers framed once, as httpx frames them (Host
    first, Content-Length last), so that a call only adds its length and body.

    `lean` says whether `Client.post` may send these bytes itself: plain http(s), no
    credentials in the URL, no header that changes the framing or the connection.
    """

    def __init__(self, url: httpx.URL, headers: httpx.Headers):
        self.url, self.headers = url, headers
        self.recorded: dict[str, list[str]] | None = None  # a lean call's headers as recorded
        self.recorded_for: list[str] | None = None  # the secrets they were scrubbed of

    @functools.cached_property  # made on the first live call: a replay needs none of this
    def lean(self) -> bool:
        url = self.url
        return (url.scheme in ("http", "https") and not url.userinfo and not any(
            name in self.headers for name in ("host", "content-length", "transfer-encoding",
                                              "connection")))

    @functools.cached_property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """The headers httpx.Request sends for a lean call but Content-Length, which comes
        last: Host first, then these headers (what its `_prepare` does, without a Request
        per call; tests/test_transport.py holds the two equal)."""
        return [(b"Host", self.url.netloc), *self.headers.raw]

    @functools.cached_property
    def origin(self) -> Origin:
        return _origin(self.url)

    @functools.cached_property
    def uri(self) -> str:
        return str(self.url)

    @functools.cached_property
    def head(self) -> bytes:
        """The request line and headers, up to the value of Content-Length."""
        return b"".join([b"POST ", self.url.raw_path, b" HTTP/1.1\r\n",
                         *(b"%s: %s\r\n" % pair for pair in self.raw), b"Content-Length: "])

    def request(self, content: bytes) -> httpx.Request:
        """The httpx Request of a call: what a stream, a proxy or another client sends."""
        return httpx.Request("POST", self.url, headers=self.headers, content=content)


class Answer:
    """A response read whole: what the engine and the cassette need of it."""

    __slots__ = ("status_code", "reason_phrase", "raw_headers", "content", "_headers")

    def __init__(self, status_code: int, reason_phrase: str, raw_headers: list[tuple[bytes, bytes]],
                 content: bytes):
        self.status_code, self.reason_phrase = status_code, reason_phrase
        self.raw_headers, self.content = raw_headers, content
        self._headers: httpx.Headers | None = None

    @property
    def headers(self) -> httpx.Headers:
        """As httpx.Response.headers; built on first read (adapters rarely read them)."""
        if self._headers is None:
            self._headers = httpx.Headers(self.raw_headers)
        return self._headers

    def header_items(self) -> list[tuple[str, str]]:
        """As `httpx.Headers.multi_items()`: names in lower case, decoded as httpx decodes."""
        raw = self.raw_headers
        encoding = "iso-8859-1"
        for candidate in ("ascii", "utf-8"):
            try:
                for name, value in raw:
                    name.decode(candidate)
                    value.decode(candidate)
            except UnicodeDecodeError:
                continue
            encoding = candidate
            break
        return [(name.lower().decode(encoding), value.decode(encoding)) for name, value in raw]


class LazyHeaders(Mapping[str, str]):
    """An Answer's headers for an adapter, as httpx.Headers only once read."""

    __slots__ = ("_answer",)

    def __init__(self, answer: Answer):
        self._answer = answer

    def __getitem__(self, name: str) -> str:
        return self._answer.headers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._answer.headers)

    def __len__(self) -> int:
        return len(self._answer.raw_headers)


_IDENTITY = (b"identity", b"")


class Client:
    """What the engine sends through: `PooledTransport` itself, with the one thing
    httpx.AsyncClient.send does that a replay needs (the timeout); auth, redirects (off by
    default), the cookie jar and event hooks cost more per call than the pool does. When the
    environment names a proxy, an httpx.AsyncClient (its proxy and NO_PROXY rules) instead."""

    def __init__(self, timeout: float, limits: httpx.Limits, *,
                 verify: ssl.SSLContext | bool = True):
        self.timeouts = httpx.Timeout(timeout).as_dict()
        self.client: httpx.AsyncClient | None = None
        self.transport: PooledTransport | None = None
        if _environment_proxies():
            self.client = httpx.AsyncClient(timeout=timeout, limits=limits, verify=verify)
        else:
            self.transport = PooledTransport(verify=verify,
                                             max_keepalive=limits.max_keepalive_connections
                                             or 1024)

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """As httpx.AsyncClient.send: the response, its body read unless `stream`."""
        if self.transport is None or request.url.userinfo:  # user:pass@ is httpx's Basic auth
            if self.client is None:
                self.client = httpx.AsyncClient(timeout=httpx.Timeout(**self.timeouts),
                                                transport=self.transport)
            return await self.client.send(request, stream=stream)
        if "timeout" not in request.extensions:
            request.extensions = {**request.extensions, "timeout": self.timeouts}
        response = await self.transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    async def post(self, prepared: Prepared, content: bytes) -> Answer:
        """POST `content` as `prepared` says, the response read whole; plain HTTP/1.1 goes as
        bytes through the pool, with no httpx Request or Response (at a few hundred calls in
        flight, building them cost more CPU than the rest of the call)."""
        if self.transport is None or not prepared.lean:
            return await answer_of(self, prepared.request(content))
        status, reason, headers, body = await self.transport.post(
            prepared.origin, b"%s%d\r\n\r\n%s" % (prepared.head, len(content), content),
            self.timeouts)
        for name, value in headers:  # rare: a server that compresses unasked
            if name.lower() == b"content-encoding" and value.strip().lower() not in _IDENTITY:
                body = httpx.Response(status, headers=headers, content=body).content
                break
        return Answer(status, reason.decode("ascii", errors="ignore"), headers, body)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()  # and the transport it was given
        if self.transport is not None:
            await self.transport.aclose()


def _environment_proxies() -> bool:
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def make_client(timeout: float, limits: httpx.Limits, *,
                verify: ssl.SSLContext | bool = True) -> Client:
    """The engine's client (see `Client`)."""
    return Client(timeout, limits, verify=verify)


async def answer_of(client: Client | httpx.AsyncClient, request: httpx.Request) -> Answer:
    """`request` sent through any client, its response read whole, as an Answer."""
    response = await client.send(request)
    await response.aread()
    return Answer(response.status_code, response.reason_phrase, response.headers.raw,
                  response.content)
