"""harness's own HTTP/1.1 transport: the path every live call takes (keep-alive, TLS, errors,
streams, and httpx's transport where the environment names a proxy)."""

from __future__ import annotations

import importlib
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from conftest import stub_providers

from harness import RetryPolicy, replay
from harness.cassettes import read_cassette
from harness.datasets import from_records
from harness.providers import Provider
from harness.stub_server import AsyncStubServer, StubServer

NO_RETRY = RetryPolicy(attempts=1)
engine = importlib.import_module("harness.replay")  # the module, not the function


def conversations(n: int, turns: int, name: str = "pooled"):
    return from_records([
        {"id": f"c{c:02d}", "messages": [
            {"role": "user", "content": f"Conversation {c}, question {t}?"}
            for t in range(1, turns + 1)]}
        for c in range(n)], name=name)


def test_calls_reuse_kept_alive_connections(tmp_path):
    with AsyncStubServer() as stub:
        provider = stub_providers(stub.base_url)[0]
        frame = replay(conversations(12, 3), [provider], history="self", record_mode="all",
                       cassette_dir=tmp_path, concurrency=3, progress=False)
        connections, answered = stub.connections, stub.answered
    assert len(frame) == 36 and (frame["status"] == "ok").all()
    assert answered == 36
    assert 1 <= connections <= 3  # one per conversation in flight, not one per call


def test_reads_under_one_timeout_end_each_at_its_own_deadline(tmp_path):
    """Many reads wait under one read timeout at once: those answered in time are never cut
    off however long the run goes on past the first one's deadline, and those never answered
    each end as a ReadTimeout row, round after round."""
    def run(stub: AsyncStubServer, n: int):
        return replay(conversations(n, 4), stub_providers(stub.base_url)[:1], history="self",
                      record_mode="all", cassette_dir=tmp_path / str(stub.port), concurrency=8,
                      progress=False, retry=NO_RETRY, timeout=0.8)

    with AsyncStubServer(latency=0.1) as quick, AsyncStubServer(latency=3.0) as silent:
        answered, cut_off = run(quick, 32), run(silent, 16)  # 1.6 s of 0.1 s calls; 2 rounds
    assert len(answered) == 128 and (answered["status"] == "ok").all()
    first_turns = cut_off[cut_off["turn"] == 1]  # the later turns are skipped
    assert len(first_turns) == 16 and (first_turns["error"] == "ReadTimeout").all()


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def _failing_rows(port: int, tmp_path, monkeypatch, httpx_transport: bool):
    if httpx_transport:  # what the rows were before harness had its own transport
        monkeypatch.setattr(engine, "make_client", lambda timeout, limits: (
            engine.httpx.AsyncClient(timeout=timeout, limits=limits)))
    provider = Provider(name="p", protocol="openai", base_url=f"http://127.0.0.1:{port}/v1",
                        model="m")
    frame = replay(conversations(1, 1), [provider], record_mode="all", progress=False,
                   cassette_dir=tmp_path / str(httpx_transport), retry=NO_RETRY, timeout=0.5)
    return frame[["status", "finish_reason", "error", "http_status", "attempts"]]


@pytest.mark.parametrize("failure", ["timeout", "refused"])
def test_a_timeout_and_a_refused_connection_are_the_error_rows_httpx_gave(
        failure, silent_port, tmp_path, monkeypatch):
    port = silent_port if failure == "timeout" else _closed_port()
    ours = _failing_rows(port, tmp_path, monkeypatch, httpx_transport=False)
    assert ours["status"].tolist() == ["error"]
    assert ours["error"].tolist() == [
        "ReadTimeout" if failure == "timeout" else "ConnectError: All connection attempts failed"]
    before = _failing_rows(port, tmp_path, monkeypatch, httpx_transport=True)
    assert ours.astype(str).to_dict("records") == before.astype(str).to_dict("records")


def test_cassettes_hold_the_same_exchanges_as_with_httpx_transport(tmp_path, monkeypatch):
    """What is recorded (request and response headers and bodies) does not depend on which
    transport carried it; only the measured latency differs."""
    def recorded(folder):
        out = []
        for path in sorted(folder.rglob("*.yaml")):
            for i in read_cassette(path):
                response = {k: v for k, v in i.response_headers.items()
                            if k.lower() not in ("date", "x-harness-latency-ms", "server")}
                out.append((path.name, i.method, i.uri, i.request_body, i.request_headers,
                            i.status, i.reason, response, i.response_body))
        return out

    with StubServer() as stub:
        providers = stub_providers(stub.base_url, "HARNESS_TEST_KEY")
        monkeypatch.setenv("HARNESS_TEST_KEY", "sk-test-0123456789abcdef")
        data = conversations(3, 2, name="same")
        replay(data, providers, record_mode="all", cassette_dir=tmp_path / "ours", progress=False)
        monkeypatch.setattr(engine, "make_client", lambda timeout, limits: (
            engine.httpx.AsyncClient(timeout=timeout, limits=limits)))
        replay(data, providers, record_mode="all", cassette_dir=tmp_path / "httpx", progress=False)
    ours, theirs = recorded(tmp_path / "ours"), recorded(tmp_path / "httpx")
    assert len(ours) == 3 * 2 * len(providers)
    assert ours == theirs


@pytest.fixture
def tls_stub(tmp_path):
    """The stub behind TLS, with a certificate from a CA made for the test."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with StubServer() as stub:
        stub.httpd.socket = server_context.wrap_socket(stub.httpd.socket, server_side=True)
        yield f"https://127.0.0.1:{stub.port}", ca_file


def test_https_to_a_server_whose_ca_is_trusted(tls_stub, tmp_path, monkeypatch):
    base_url, ca_file = tls_stub
    provider = stub_providers(base_url)[0]
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # as httpx: the CA bundle to trust
    frame = replay(conversations(2, 2), [provider], history="self", record_mode="all",
                   cassette_dir=tmp_path / "c", progress=False)
    assert (frame["status"] == "ok").all() and len(frame) == 4
    assert frame["response"].str.len().gt(0).all()


def test_https_to_an_untrusted_certificate_is_an_error_row(tls_stub, tmp_path, monkeypatch):
    base_url, _ = tls_stub
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    frame = replay(conversations(1, 1), [stub_providers(base_url)[0]], record_mode="all",
                   cassette_dir=tmp_path / "c", progress=False, retry=NO_RETRY)
    assert frame["status"].tolist() == ["error"]
    assert "ConnectError" in frame["error"][0] and "CERTIFICATE_VERIFY_FAILED" in frame["error"][0]


def test_a_stream_arrives_in_pieces_through_the_transport(tmp_path):
    with StubServer(chunk_delay=0.03) as stub:  # chunked, paced: the stamps are apart
        provider = stub_providers(stub.base_url)[0]
        frame = replay(conversations(1, 2), [provider], history="self", record_mode="all",
                       cassette_dir=tmp_path, progress=False, stream=True)
    assert (frame["status"] == "ok").all() and frame["response"].str.len().gt(0).all()
    assert (frame["ttfb_ms"] < frame["ttft_ms"]).all()
    assert (frame["ttft_ms"] < frame["e2e_ms"]).all()


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself, keeping the request line."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).seen.append(self.path)
        body = json.dumps({"choices": [{"message": {"content": "via the proxy"},
                                        "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_proxy_named_by_the_environment_carries_the_calls(tmp_path, monkeypatch):
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _Proxy.seen = []
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    target = f"http://127.0.0.1:{_closed_port()}/v1"  # nothing listens: only the proxy answers
    try:
        frame = replay(conversations(1, 2), [Provider(name="p", protocol="openai",
                                                      base_url=target, model="m")],
                       record_mode="all", cassette_dir=tmp_path, progress=False, retry=NO_RETRY)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert frame["response"].tolist() == ["via the proxy"] * 2
    assert _Proxy.seen == [f"{target}/chat/completions"] * 2


class RawServer:
    """A server on 127.0.0.1 that keeps each request's bytes as they arrived (its port
    written PORT) and answers with the bytes `answer(body)` gives (None: close without
    answering; `close_after`: close once it answered)."""

    def __init__(self, answer, close_after: bool = False):
        self.answer, self.requests, self.close_after = answer, [], close_after
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                while len(data) < length:
                    data += conn.recv(65536)
                body, data = data[:length], data[length:]
                port = str(self.port).encode()
                self.requests.append((head + b"\r\n\r\n" + body).replace(port, b"PORT"))
                reply = self.answer(body)
                if reply is None:
                    return
                conn.sendall(reply)
                if self.close_after:
                    return

    def close(self) -> None:
        self.sock.close()


def _completion(text: str) -> bytes:
    return json.dumps({"id": "r1", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()


def _run_both(answer, tmp_path, monkeypatch, conversations_=2, turns=2, close_after=False):
    """The same replay through harness's transport and through httpx's; per transport: the
    request bytes the server received, the recorded exchanges, the rows."""
    out = {}
    for name in ("ours", "httpx"):
        server = RawServer(answer, close_after)
        try:
            with monkeypatch.context() as patch:
                if name == "httpx":
                    patch.setattr(engine, "make_client", lambda timeout, limits: (
                        engine.httpx.AsyncClient(timeout=timeout, limits=limits)))
                patch.setenv("HARNESS_TEST_KEY", "sk-test-0123456789abcdef")
                provider = Provider(name="p", protocol="openai", api_key_env="HARNESS_TEST_KEY",
                                    base_url=f"http://127.0.0.1:{server.port}/v1", model="m",
                                    headers={"X-Team": "evals"})
                frame = replay(conversations(conversations_, turns), [provider],
                               record_mode="all", cassette_dir=tmp_path / name, progress=False,
                               retry=NO_RETRY, timeout=5, history="self")
        finally:
            server.close()
        recorded = [(i.method, i.uri.replace(str(server.port), "PORT"),
                     {k: [v.replace(str(server.port), "PORT") for v in values]
                      for k, values in i.request_headers.items()},
                     i.request_body, i.status, i.reason,
                     {k: v for k, v in i.response_headers.items() if k != "x-harness-latency-ms"},
                     i.response_body)
                    for path in sorted((tmp_path / name).rglob("*.yaml"))
                    for i in read_cassette(path)]
        rows = frame.drop(columns=["latency_ms", "e2e_ms", "output_tokens_per_s"])
        out[name] = (sorted(server.requests), recorded, rows.astype(str).to_dict("records"))
    return out


@pytest.mark.parametrize("framing", ["content-length", "chunked", "gzip"])
def test_the_bytes_sent_and_recorded_are_httpx_s(framing, tmp_path, monkeypatch):
    """A live call goes out as the very bytes httpx sends (Host first, the provider's headers,
    Content-Length last), and what is recorded of the answer is what httpx made of it:
    a chunked body joined, a gzipped one decoded, the framing headers left out."""
    import gzip

    def answer(request: bytes) -> bytes:
        body = _completion(f"reply {len(request)}")
        if framing == "chunked":
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                               for part in (body[:10], body[10:])) + b"0\r\n\r\n")
        headers = b"Content-Type: application/json\r\nX-Request-Id: abc\r\n"
        if framing == "gzip":
            body = gzip.compress(body)
            headers += b"Content-Encoding: gzip\r\n"
        return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (headers, len(body), body)

    both = _run_both(answer, tmp_path, monkeypatch)
    requests, recorded, rows = both["ours"]
    assert len(requests) == len(recorded) == 4
    assert all(b"sk-test-0123456789abcdef" in r for r in requests)  # sent, never recorded
    assert not any("sk-test" in repr(r) for r in recorded)
    assert all(row["response"].startswith("reply ") for row in rows)
    assert both["ours"] == both["httpx"]


@pytest.mark.parametrize("drop", ["before the answer", "mid-body"])
def test_a_dropped_connection_is_the_error_row_httpx_gave(drop, tmp_path, monkeypatch):
    """The server closes the connection: the row is an error row with httpx's own text, and
    the next turn of a self-history conversation is skipped, as with httpx's transport."""
    def answer(request: bytes) -> bytes | None:
        if drop == "before the answer":
            return None
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{}"

    both = _run_both(answer, tmp_path, monkeypatch, conversations_=1, close_after=True)
    _, recorded, rows = both["ours"]
    assert [row["status"] for row in rows] == ["error", "skipped"]
    assert rows[0]["error"] == ("RemoteProtocolError: Server disconnected without sending a "
                                "response." if drop == "before the answer" else
                                "RemoteProtocolError: peer closed connection without sending "
                                "complete message body (received 2 bytes, expected 500)")
    assert [r[4] for r in recorded] == [599]  # kept, so that a replay fails the same way
    assert both["ours"][1:] == both["httpx"][1:]
