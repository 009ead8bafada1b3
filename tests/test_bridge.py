"""The local bridge: Cohere v1, Cohere v2 and Gemini answered by an OpenAI-compatible server,
over real HTTP on 127.0.0.1 (the stub as upstream always; the real llama.cpp model when the
`local` extra is installed)."""

from __future__ import annotations

import importlib.util
import re

import httpx
import pandas as pd
import pytest

from harness import replay
from harness.bridge import Bridge
from harness.local import LocalModelError, LocalServer, model_path
from harness.messages import Reply, ToolCall, Usage
from harness.providers import Provider, cohere_v1, cohere_v2, gemini


def bridged(base_url: str, model: str, max_tokens: int = 40) -> list[Provider]:
    common = {"model": model, "params": {"max_tokens": max_tokens, "temperature": 0, "seed": 42}}
    return [Provider(name="bridge-cohere-v1", protocol="cohere-v1", base_url=f"{base_url}/v1",
                     **common),
            Provider(name="bridge-cohere-v2", protocol="cohere-v2", base_url=f"{base_url}/v2",
                     **common),
            Provider(name="bridge-gemini", protocol="gemini", base_url=f"{base_url}/v1beta",
                     **common)]


@pytest.mark.parametrize("adapter", [cohere_v1, cohere_v2, gemini],
                         ids=["cohere_v1", "cohere_v2", "gemini"])
@pytest.mark.parametrize("reply", [
    Reply(text="Hello there.", finish_reason="stop", usage=Usage(5, 3, 8, cached_input_tokens=0),
          response_id="r1"),
    Reply(text="Cut", finish_reason="length", usage=Usage(5, 40, 45), response_id="r2"),
    Reply(finish_reason="tool_calls", usage=Usage(9, 4, 13), response_id="r3",
          tool_calls=[ToolCall(id="c1", name="lookup", arguments='{"q": "x"}')]),
], ids=["stop", "length", "tool"])
def test_build_response_is_read_back_by_parse_response(adapter, reply):
    import json
    body = json.dumps(adapter.build_response(reply, "m")).encode()
    back = adapter.parse_response(200, {}, body)
    assert (back.text, back.finish_reason) == (reply.text, reply.finish_reason)
    fields = ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens")
    assert [getattr(back.usage, f) for f in fields] == [getattr(reply.usage, f) for f in fields]
    assert [(c.name, json.loads(c.arguments)) for c in back.tool_calls] == [
        (c.name, json.loads(c.arguments)) for c in reply.tool_calls]


def test_bridge_translates_each_protocol_to_openai_and_back(stub, small_dataset, tmp_path):
    with Bridge(stub.base_url + "/v1") as bridge:
        providers = bridged(bridge.base_url, "stub-upstream")
        frame = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path,
                       history="self", progress=False)
        assert httpx.post(bridge.base_url + "/nowhere", json={}).status_code == 404
    assert (frame["status"] == "ok").all(), frame["error"].dropna().tolist()
    # every request reached the upstream as an OpenAI chat completion with the same messages
    assert {r["path"] for r in stub.requests} == {"/v1/chat/completions"}
    sent = [r["body"] for r in stub.requests]
    assert all(b["max_tokens"] == 40 and b["seed"] == 42 for b in sent)
    assert sum(b["messages"][0] == {"role": "system", "content": "Be brief."} for b in sent) == 6
    assert frame["response"].str.startswith("stub-upstream reply to turn").all()
    c2 = frame[frame["conversation_id"] == "c2"]
    assert list(c2["finish_reason"]) == ["length"] * 3 + ["stop"] * 3  # the upstream cut turn 1
    assert frame["input_tokens"].notna().all() and frame["billed_input_tokens"].isna().all()
    # each protocol's row says the same as the upstream's, in its own format
    wide = frame.pivot(index=["conversation_id", "turn"], columns="provider", values="response")
    assert (wide.nunique(axis=1) == 1).all()
    stub.__exit__()
    offline = replay(small_dataset, providers, cassette_dir=tmp_path, history="self",
                     progress=False)
    pd.testing.assert_frame_equal(frame, offline)


def test_bridge_passes_upstream_errors_on_in_the_protocols_shape(tmp_path, small_dataset):
    with Bridge("http://127.0.0.1:9/v1") as bridge:  # nothing listens on port 9
        response = httpx.post(bridge.base_url + "/v2/chat", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 502 and "unreachable" in response.json()["message"]
        bad = httpx.post(bridge.base_url + "/v1beta/models/m:generateContent", content=b"{")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == 400


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install -e '.[local]')")
    try:
        model_path("smollm2")
    except LocalModelError as exc:
        pytest.skip(str(exc))
    with LocalServer("smollm2", port=0, threads=1, ctx_size=1024) as server:
        yield server


def test_bridge_answers_every_protocol_from_the_real_model(smollm2, small_dataset, tmp_path):
    with Bridge(smollm2.base_url) as bridge:
        providers = bridged(bridge.base_url, smollm2.alias, max_tokens=12)
        frame = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path,
                       history="reference", concurrency=1, progress=False)
    assert (frame["status"] == "ok").all(), frame["error"].dropna().tolist()
    assert frame["response"].str.len().gt(0).all()
    assert frame["output_tokens"].le(12).all() and frame["input_tokens"].gt(5).all()
    # temperature 0 and one seed: the three protocols get the same SmolLM2 reply per turn
    wide = frame.pivot(index=["conversation_id", "turn"], columns="provider", values="response")
    assert (wide.nunique(axis=1) == 1).all()
    assert not frame["response"].str.contains("reply to turn").any()  # not the stub's echo


# --- streams: each protocol's own stream, translated from the upstream's as it arrives ----------

STREAM_SAME = ["conversation_id", "turn", "provider", "response", "finish_reason", "input_tokens",
               "output_tokens", "status"]
CONTENT_EVENTS = {"bridge-cohere-v1": rb'"event_type": "text-generation"',  # non-empty text:
                  "bridge-cohere-v2": rb'"content":\{"text":"[^"]', "bridge-gemini": rb'"text":"[^"]'}


def _stream_bodies(cassette_dir) -> dict[str, list[bytes]]:
    from harness.cassettes import read_cassette

    return {provider: [e.response_body for p in sorted(cassette_dir.rglob(f"{provider}/*.yaml"))
                       for e in read_cassette(p)] for provider in CONTENT_EVENTS}


def test_the_bridge_streams_each_protocol_from_the_upstreams_stream(small_dataset, tmp_path):
    """Over the paced stub (it waits between the words of its OpenAI stream), each protocol's
    stream arrives in its own format, an event an upstream chunk, timed, and replays offline."""
    from harness.stub_server import StubServer

    with StubServer(chunk_delay=0.01) as paced, Bridge(paced.base_url + "/v1") as bridge:
        providers = bridged(bridge.base_url, "stub-upstream")
        plain = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path / "p",
                       history="self", progress=False)
        live = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path / "s",
                      history="self", progress=False, stream=True)
        upstream = [r["body"] for r in paced.requests]
    assert (live["status"] == "ok").all(), live["error"].dropna().tolist()
    streamed = [b for b in upstream if b.get("stream")]
    assert len(streamed) == len(live) and all(
        b["stream_options"] == {"include_usage": True} for b in streamed)
    pd.testing.assert_frame_equal(plain[STREAM_SAME], live[STREAM_SAME])
    assert (live["ttft_ms"] > 0).all() and (live["ttft_ms"] < live["latency_ms"]).all()
    assert live["itl_ms"].notna().all()
    for provider, bodies in _stream_bodies(tmp_path / "s").items():
        rows = live[live["provider"] == provider].sort_values(["conversation_id", "turn"])
        # one content event per upstream chunk (a word each): streamed, not one whole reply
        assert [len(re.findall(CONTENT_EVENTS[provider], b)) for b in bodies] == list(
            rows["response"].str.split().str.len()), provider
    offline = replay(small_dataset, providers, cassette_dir=tmp_path / "s", history="self",
                     progress=False, stream=True)
    assert offline.attrs["run"]["timing"] == {"recorded": len(live)}
    pd.testing.assert_frame_equal(live, offline)


def test_a_streamed_request_with_an_upstream_error_gets_the_protocols_error(tmp_path):
    with Bridge("http://127.0.0.1:9/v1") as bridge:  # nothing listens on port 9
        response = httpx.post(bridge.base_url + "/v1/chat", json={
            "model": "m", "message": "hi", "stream": True})
        assert response.status_code == 502 and "unreachable" in response.json()["message"]
        gemini_stream = httpx.post(bridge.base_url + "/v1beta/models/m:streamGenerateContent",
                                   params={"alt": "sse"}, json={"contents": [
                                       {"role": "user", "parts": [{"text": "hi"}]}]})
        assert gemini_stream.status_code == 502 and gemini_stream.json()["error"]["code"] == 502


def test_the_bridge_streams_every_protocol_from_the_real_model(smollm2, small_dataset, tmp_path):
    """SmolLM2's own stream through the bridge: timed as it arrives, the same reply and token
    counts as the plain request at temperature 0, and the same values replayed offline."""
    with Bridge(smollm2.base_url) as bridge:
        providers = bridged(bridge.base_url, smollm2.alias, max_tokens=12)
        kwargs = {"history": "reference", "concurrency": 1, "progress": False}
        plain = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path / "p",
                       **kwargs)
        live = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path / "s",
                      stream=True, **kwargs)
    assert (live["status"] == "ok").all(), live["error"].dropna().tolist()
    assert (live["ttft_ms"] > 0).all() and (live["ttft_ms"] < live["latency_ms"]).all()
    assert live.attrs["run"]["timing"] == {"live": len(live)}
    # token counts come from each protocol's usage event: the plain run's, at temperature 0
    pd.testing.assert_frame_equal(plain[STREAM_SAME], live[STREAM_SAME])
    assert live["output_tokens"].gt(1).all() and live["itl_ms"].notna().all()
    # streamed in pieces, not one whole reply; `any`, not `all`: on a loaded machine llama.cpp
    # can hand a whole short reply to one chunk (seen in CI: 12 tokens, one event), and one
    # event per upstream chunk is asserted exactly over the paced stub above
    for provider, bodies in _stream_bodies(tmp_path / "s").items():
        assert any(len(re.findall(CONTENT_EVENTS[provider], b)) > 1 for b in bodies), provider
    offline = replay(small_dataset, providers, cassette_dir=tmp_path / "s", stream=True, **kwargs)
    assert offline.attrs["run"]["timing"] == {"recorded": len(live)}
    pd.testing.assert_frame_equal(live, offline)
