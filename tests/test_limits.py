"""Adaptive concurrency against a rate-limiting server, tokens per minute, their validation."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, stub_providers
from pydantic import ValidationError

from harness import RetryPolicy, replay
from harness.datasets import from_records
from harness.limits import AdaptiveConcurrency, TokenLimiter
from harness.providers import Provider
from harness.stub_server import AsyncStubServer


def conversations(n: int, turns: int):
    return from_records([
        {"id": f"c{c:03d}", "messages": [
            {"role": "user", "content": f"Conversation {c}, question {t}: what is {c} times {t}?"}
            for t in range(1, turns + 1)]}
        for c in range(n)], name="limited")


def test_auto_concurrency_against_a_rate_limit_sends_every_turn_once_without_errors(tmp_path):
    dataset = conversations(16, 3)  # 48 turns, well past 6 a second even on a loaded machine
    retry = RetryPolicy(attempts=8, base=0.05, max_wait=2.0)
    with AsyncStubServer(latency=0.02, rate=6, keep_bodies=True) as stub:
        provider = stub_providers(stub.base_url)[0]
        frame = replay(dataset, [provider], history="self", record_mode="all",
                       cassette_dir=tmp_path, concurrency="auto", progress=False, retry=retry)
        answered, refused, bodies = stub.answered, stub.refused, list(stub.bodies)
    assert refused > 0  # the limit was reached: the adaptation was exercised
    assert len(frame) == 48 and (frame["status"] == "ok").all()
    assert not frame.duplicated(["conversation_id", "turn", "provider"]).any()
    assert answered == 48 and len(set(bodies)) == 48  # no turn answered twice
    # what a refused attempt cost is in the rows, and replays offline as it happened
    assert int((frame["attempts"] - 1).sum()) == refused
    offline = replay(dataset, [provider], history="self", cassette_dir=tmp_path,
                     concurrency="auto", progress=False, retry=retry)
    pd.testing.assert_frame_equal(offline, frame)


def test_token_limit_run_completes_every_turn(tmp_path):
    dataset = conversations(6, 2)
    with AsyncStubServer() as stub:
        provider = stub_providers(stub.base_url)[0].model_copy(update={"token_limit": 600000})
        frame = replay(dataset, [provider], history="self", record_mode="all",
                       cassette_dir=tmp_path, concurrency=4, progress=False)
        assert stub.answered == 12
        assert stub.bodies == []  # a load run's stub does not grow with every call it answers
    assert (frame["status"] == "ok").all() and len(frame) == 12


def test_aimd_window_grows_on_success_and_halves_once_per_overloaded_burst():
    async def scenario() -> AdaptiveConcurrency:
        aimd = AdaptiveConcurrency(start=4, ceiling=64)
        for _ in range(8):  # slow start: one more per success
            await aimd.release(await aimd.acquire(), 200)
        assert aimd.window == 12 and aimd.pace is None
        sent = [await aimd.acquire() for _ in range(3)]
        for at in sent:  # three 529s of the same burst: one cut
            await aimd.release(at, 529, retry_after=0.001)
        assert aimd.window == 6 and aimd.cuts == 1 and aimd.in_flight == 0
        assert aimd.pace is not None  # a refusal teaches a pace as well
        return aimd

    aimd = asyncio.run(scenario())
    assert not aimd.slow_start


def test_a_429_teaches_the_pace_the_server_let_through_and_leaves_the_window():
    async def scenario() -> None:
        aimd = AdaptiveConcurrency(start=32, ceiling=64)
        sent = [await aimd.acquire() for _ in range(24)]
        for at in sent[:20]:  # 20 calls answered
            await aimd.release(at, 200)
        window = aimd.window
        await aimd.release(sent[20], 429, retry_after=0.001)
        assert aimd.window == window and aimd.cuts == 0 and aimd.slow_start
        assert aimd.pace == pytest.approx(0.97 * 20)  # what is back so far
        await aimd.release(sent[21], 200)  # sent with the refused call, answered after it
        assert aimd.pace == pytest.approx(0.97 * 20)  # two are still out: still measuring
        await aimd.release(sent[22], 503)  # not let through: not counted
        await aimd.release(sent[23], 200)  # the last call sent before the refusal is back
        measured = 0.97 * 22
        assert aimd.pace == pytest.approx(measured)
        for _ in range(5):  # then, while no refusal comes, the pace rises slowly
            await asyncio.sleep(0.01)
            await aimd.release(await aimd.acquire(), 200)
        assert measured < aimd.pace < 1.1 * measured
        assert aimd.in_flight == 0

    asyncio.run(scenario())


def test_token_limiter_takes_the_estimate_and_gives_back_the_difference():
    async def scenario() -> TokenLimiter:
        tokens = TokenLimiter(6000)
        await tokens.take(1000)
        tokens.correct(1000, 400)  # the call used less than estimated
        return tokens

    tokens = asyncio.run(scenario())
    assert 5400 <= tokens.level <= 6000


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf")])
def test_token_limit_must_be_positive_and_finite(value):
    with pytest.raises(ValidationError, match="tokens per minute"):
        Provider(name="p", protocol="openai", base_url="http://127.0.0.1:1/v1", model="m",
                 token_limit=value)


def test_cli_rejects_a_concurrency_that_is_neither_a_number_nor_auto(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "replay", "datasets/demo.jsonl",
                           "--concurrency", "fast"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "expected a number or auto" in lines[0]
