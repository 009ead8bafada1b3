"""`--stream`: each protocol's stream over real HTTP from the paced stub, timed by harness's
transport as it arrives, the stamps kept in the cassette and read back offline."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import vcr
from conftest import stub_providers

from harness import compare, replay
from harness.cassettes import Interaction, read_cassette
from harness.cli import main
from harness.messages import Reply, ToolCall, Usage
from harness.providers import protocol_module
from harness.providers._common import StreamScanner, sse_events
from harness.results import TIMING_COLUMNS
from harness.stub_server import StubServer
from harness.timings import HEADER, Timings, columns

CHUNK_DELAY = 0.01  # seconds the stub waits between the events of a stream
SAME = ["conversation_id", "turn", "provider", "response", "finish_reason", "input_tokens",
        "output_tokens", "total_tokens", "status"]


@pytest.fixture
def paced():
    with StubServer(chunk_delay=CHUNK_DELAY) as server:
        yield server


def test_streams_are_timed_as_they_arrive_and_replay_offline_the_same(paced, small_dataset,
                                                                      tmp_path):
    providers = stub_providers(paced.base_url, gemini=True)
    live = replay(small_dataset, providers, record_mode="once", cassette_dir=tmp_path / "s",
                  progress=False, stream=True)
    assert (live["status"] == "ok").all() and len(live) == 7 * 5
    # every protocol was asked for its own stream
    paths = {r["path"] for r in paced.requests}
    assert any(p.endswith(":streamGenerateContent?alt=sse") for p in paths)
    bodies = [r["body"] for r in paced.requests if "contents" not in r["body"]]
    assert all(b["stream"] is True for b in bodies)
    assert all(b["stream_options"] == {"include_usage": True} for b in bodies if "messages" in b
               and b["model"] == "stub-gpt")

    assert (live["ttft_ms"] > 0).all() and (live["ttft_ms"] < live["latency_ms"]).all()
    assert (live["ttfb_ms"] <= live["ttft_ms"]).all()
    assert (live["ttfc_ms"] == live["ttft_ms"]).all()  # the stub does not reason
    assert (live["e2e_ms"] == live["latency_ms"]).all()
    assert live.attrs["run"]["timing"] == {"live": 35} and live.attrs["run"]["stream"]
    # the stub pauses between every two events (a word is a token): the end cannot come sooner
    assert (live["latency_ms"] >= (live["output_tokens"] - 1) * CHUNK_DELAY * 1000).all()
    assert (live["itl_ms"] > 0).all()
    assert (live["output_tokens_per_s"] > 0).all()

    paced.__exit__()  # nothing answers any more
    offline = replay(small_dataset, providers, cassette_dir=tmp_path / "s", progress=False,
                     stream=True)
    assert offline.attrs["run"]["timing"] == {"recorded": 35}  # read back, not measured
    pd.testing.assert_frame_equal(live, offline)


def test_a_stream_says_what_the_plain_reply_says(stub, small_dataset, tmp_path):
    providers = stub_providers(stub.base_url, gemini=True)
    plain = replay(small_dataset, providers, record_mode="once", cassette_dir=tmp_path / "p",
                   progress=False)
    streamed = replay(small_dataset, providers, record_mode="once", cassette_dir=tmp_path / "s",
                      progress=False, stream=True)
    pd.testing.assert_frame_equal(plain[SAME], streamed[SAME])
    assert plain["ttft_ms"].isna().all() and streamed["ttft_ms"].notna().all()
    assert (plain["e2e_ms"] == plain["latency_ms"]).all()
    tables = compare.usage(plain), compare.usage(streamed)
    assert "ttft_p50_ms" not in tables[0] and "ttft_p95_ms" in tables[1]
    assert {"itl_p50_ms", "ttfb_p95_ms", "output_tokens_per_s_p50"} <= set(tables[1].columns)


def test_the_timings_header_loads_in_stock_vcrpy(paced, small_dataset, tmp_path):
    providers = stub_providers(paced.base_url)[:1]
    replay(small_dataset, providers, record_mode="once", cassette_dir=tmp_path, progress=False,
           stream=True)
    path = next(tmp_path.rglob("c1.yaml"))
    [first, *_] = read_cassette(path)
    stamps = Timings.parse(first.header(HEADER))
    assert stamps is not None and 0 < stamps.ttfb <= stamps.ttft <= stamps.last <= stamps.end
    assert first.response_body.startswith(b"data: ")
    with vcr.use_cassette(str(path), record_mode="none") as cassette:
        assert len(cassette.data) == 2
        assert HEADER in cassette.data[0][1]["headers"]


def test_replay_stream_on_the_command_line_prints_ttft(paced, small_dataset_file, tmp_path,
                                                       capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "harness.toml").write_text(
        f'[providers.s]\nprotocol = "anthropic"\nbase_url = "{paced.base_url}/v1"\n'
        'model = "stub-claude"\n', encoding="utf-8")
    code = main(["replay", str(small_dataset_file), "-p", "s", "--stream", "--record-mode",
                 "once", "--no-progress", "--out", "r.parquet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ttft ms" in out
    frame = pd.read_parquet(tmp_path / "r.parquet")
    assert frame["ttft_ms"].notna().all()
    assert "stream timings" not in out  # measured by this run
    assert main(["replay", str(small_dataset_file), "-p", "s", "--stream", "--no-progress"]) == 0
    assert "stream timings: 7 turns read from the cassettes, not measured now" in capsys.readouterr().out


# --- the protocol functions, on their own -------------------------------------------------------

REPLY = Reply(text="Paris is the capital.", finish_reason="stop", response_id="r1", model="m",
              usage=Usage(input_tokens=9, output_tokens=4, total_tokens=13))
PROTOCOLS = ["openai", "anthropic", "cohere-v1", "cohere-v2", "gemini"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("reply", [REPLY, Reply(text="", finish_reason="tool_calls", usage=REPLY.usage,
                                                tool_calls=[ToolCall(id="c", name="f",
                                                                     arguments='{"a": 1}')])])
def test_stream_response_parses_back_and_marks_its_tokens(protocol, reply):
    adapter = protocol_module(protocol)
    chunks = adapter.stream_response(reply, "m")
    body = b"".join(chunks)
    back = adapter.parse_response(200, {}, body)
    assert (back.text, back.finish_reason, back.usage.output_tokens) == (
        reply.text, reply.finish_reason, 4)
    assert [c.name for c in back.tool_calls] == [c.name for c in reply.tool_calls]
    # fed a byte at a time, the scanner finds the same events as the whole-body parser
    scanner = StreamScanner(adapter.STREAM_NDJSON)
    events = [e for i in range(len(body)) for e in scanner.feed(body[i:i + 1])] + scanner.close()
    whole = ([json.loads(line) for line in body.splitlines()] if adapter.STREAM_NDJSON
             else [data for _, data in sse_events(body)])
    assert events == whole
    kinds = [adapter.token_kind(e) for e in events]
    assert "content" in kinds and "reasoning" not in kinds
    if reply.text:
        assert kinds.count("content") == len(reply.text.split())  # one event a word
    assert adapter.token_kind(events[-1]) is None or protocol == "gemini"


@pytest.mark.parametrize(("protocol", "reasoning", "content"), [
    ("openai", {"choices": [{"delta": {"reasoning_content": "hm"}}]},
     {"choices": [{"delta": {"content": "Hi"}}]}),
    ("anthropic", {"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hm"}},
     {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
    ("cohere-v2", {"type": "content-delta", "delta": {"message": {"content": {"thinking": "hm"}}}},
     {"type": "content-delta", "delta": {"message": {"content": {"text": "Hi"}}}}),
    ("gemini", {"candidates": [{"content": {"parts": [{"text": "hm", "thought": True}]}}]},
     {"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}),
])
def test_reasoning_comes_before_content(protocol, reasoning, content):
    adapter = protocol_module(protocol)
    assert adapter.token_kind(reasoning) == "reasoning"
    assert adapter.token_kind(content) == "content"
    assert adapter.token_kind({"usage": {}, "choices": []}) is None


def test_columns_count_tokens_from_usage_not_chunks():
    stamps = Timings(ttfb=5.0, ttft=100.0, ttfc=160.0, last=400.0, end=410.0)
    out = columns(stamps, 410.0, 7)  # 7 tokens, whatever the number of chunks
    assert out == {"e2e_ms": 410.0, "ttfb_ms": 5.0, "ttft_ms": 100.0, "ttfc_ms": 160.0,
                   "itl_ms": 50.0, "output_tokens_per_s": round(7 / 0.41, 3)}
    assert columns(stamps, 410.0, 1)["itl_ms"] is None  # one token: no interval
    assert columns(None, 80.0, 4) == {"e2e_ms": 80.0, "ttfb_ms": None, "ttft_ms": None,
                                      "ttfc_ms": None, "itl_ms": None, "output_tokens_per_s": 50.0}
    assert Timings.parse(stamps.header()) == stamps
    assert Timings.parse("ttft=1.5;bogus=2;end=x") == Timings(ttft=1.5)
    assert set(out) == set(TIMING_COLUMNS)


@pytest.mark.parametrize("headers, expected", [
    ({"x-harness-latency-ms": ["12.5"], HEADER: ["ttfb=1.0;ttft=2.0;end=12.5"]},
     (12.5, Timings(ttfb=1.0, ttft=2.0, end=12.5))),
    ({"x-harness-latency-ms": ["12.5"], "content-type": ["application/json"]}, (12.5, None)),
    ({"X-Harness-Latency-Ms": ["7"], "X-Harness-Timings": ["ttfb=3.0"]},  # spelled by hand
     (7.0, Timings(ttfb=3.0))),
    ({"Content-Type": ["application/json"]}, (None, None)),  # recorded by vcrpy
    ({"x-harness-latency-ms": ["nan"]}, (None, None)),
])
def test_a_recording_gives_back_its_latency_and_stamps_however_its_headers_are_spelled(
        headers, expected):
    hit = Interaction("POST", "https://api.example.test/v1", {}, b"{}", 200, "OK", headers, b"{}")
    assert hit.recorded_timing() == expected == (hit.latency_ms(), hit.timings())
