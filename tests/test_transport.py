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


class CountingStub(AsyncStubServer):
    """The asyncio stub, counting the connections it was opened."""

    connections = 0

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        await super()._serve(reader, writer)


def test_calls_reuse_kept_alive_connections(tmp_path):
    with CountingStub() as stub:
        provider = stub_providers(stub.base_url)[0]
        frame = replay(conversations(12, 3), [provider], history="self", record_mode="all",
                       cassette_dir=tmp_path, concurrency=3, progress=False)
        connections, answered = stub.connections, stub.answered
    assert len(frame) == 36 and (frame["status"] == "ok").all()
    assert answered == 36
    assert connections <= 3  # one per conversation in flight, not one per call


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
