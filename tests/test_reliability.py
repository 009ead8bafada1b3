"""Faults become rows, retries are counted, a killed run resumes without re-calling a turn."""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
from conftest import ROOT, stub_providers, write_stub_provider

from harness import RetryPolicy, compare, replay, results
from harness.datasets import from_records
from harness.stub_server import FAULTS, StubServer


def many_turns(conversations: int, turns: int, name: str = "many"):
    records = [
        {"id": f"conv-{c:03d}", "messages": [
            {"role": "user", "content": f"Conversation {c}, question {t}: what is {c} plus {t}?"}
            for t in range(1, turns + 1)]}
        for c in range(conversations)
    ]
    return from_records(records, name=name)


def test_fault_injection_every_turn_accounted_for_and_replayed_as_it_happened(tmp_path):
    dataset = many_turns(75, 4)  # 300 turns
    retry = RetryPolicy(attempts=4, base=0.01, max_wait=0.2)
    with StubServer(fault_rate=0.25, seed=11, stall_seconds=1.5) as stub:
        provider = stub_providers(stub.base_url)[0]
        frame = replay(dataset, [provider], history="reference", record_mode="all",
                       cassette_dir=tmp_path, concurrency=8, timeout=0.5, progress=False,
                       retry=retry)
        faults = dict(stub.faults)
    assert len(frame) == 300
    assert not frame.duplicated(["conversation_id", "turn", "provider"]).any()
    assert set(frame["status"]) <= {"ok", "error"}
    assert sum(faults.values()) >= 45 and set(faults) == set(FAULTS)
    retried = frame[frame["attempts"] > 1]
    assert len(retried) >= 25
    assert (frame.loc[frame["status"] == "ok", "response"].str.len() > 0).all()
    errors = frame[frame["status"] == "error"]
    assert (errors["attempts"] == 4).all() and errors["error"].notna().all()
    usage = compare.usage(frame)
    assert usage.loc[provider.name, "retries"] == int((frame["attempts"] - 1).sum())

    # offline, with the stub gone, every column of every row is what the live run gave,
    # latency included (it is the recorded one)
    offline = replay(dataset, [provider], history="reference", cassette_dir=tmp_path,
                     concurrency=8, timeout=0.5, progress=False, retry=retry)
    pd.testing.assert_frame_equal(offline, frame)
    transport = frame["error"].str.contains("Timeout|Protocol|ReadError", na=False)
    print(f"\nfaults injected: {faults}; rows retried: {len(retried)}; "
          f"retries: {usage.loc[provider.name, 'retries']}; error rows: {len(errors)}; "
          f"rows whose last attempt failed in transport: {int(transport.sum())}; "
          f"offline == live on all {len(frame.columns)} columns of {len(frame)} rows")


@pytest.mark.parametrize("fault", ["drop", "stall", "truncated"])
def test_a_turn_lost_in_transport_replays_offline_as_the_same_failure(tmp_path, fault):
    from vcr.persisters.filesystem import FilesystemPersister
    from vcr.serializers import yamlserializer

    dataset = many_turns(2, 2)
    retry = RetryPolicy(attempts=3, base=0.01, max_wait=0.05)
    with StubServer(fault_rate=1.0, stall_seconds=1.0) as stub:
        stub.random.choice = lambda faults: fault  # every attempt of every turn fails so
        provider = stub_providers(stub.base_url)[0]
        live = replay(dataset, [provider], history="reference", record_mode="all",
                      cassette_dir=tmp_path, timeout=0.3, progress=False, retry=retry)
        sent = len(stub.requests)
    assert (live["status"] == "error").all() and (live["attempts"] == 3).all()
    assert live["http_status"].isna().all() and live["error"].notna().all()
    assert sent == 12
    offline = replay(dataset, [provider], history="reference", cassette_dir=tmp_path,
                     timeout=0.3, progress=False, retry=retry)
    pd.testing.assert_frame_equal(offline, live)
    # stock vcrpy loads these recordings: a response marked as harness's, no HTTP status
    files = sorted(tmp_path.rglob("*.yaml"))
    assert len(files) == 2
    for path in files:
        requests, responses = FilesystemPersister.load_cassette(str(path), yamlserializer)
        assert len(requests) == 6
        assert {r["status"]["code"] for r in responses} == {599}
        assert all(r["headers"]["x-harness-transport-error"] for r in responses)


def test_client_errors_are_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_KEY", "wrong")
    with StubServer(api_key="right") as stub:
        provider = stub_providers(stub.base_url, api_key_env="HARNESS_TEST_KEY")[0]
        frame = replay(many_turns(2, 1), [provider], record_mode="all", cassette_dir=tmp_path,
                       progress=False)
    assert (frame["http_status"] == 401).all() and (frame["attempts"] == 1).all()


@pytest.mark.parametrize("headers,expected", [
    ({"retry-after": "0.05"}, 0.05),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after": "120"}, 30.0),  # capped at max_wait
])
def test_retry_after_is_honoured_up_to_the_cap(headers, expected):
    policy = RetryPolicy(attempts=3, base=5, max_wait=30)
    assert policy.wait(1, httpx.Response(429, headers=headers)) == expected


def test_retry_after_as_an_http_date():
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=20)
    headers = {"retry-after": email.utils.format_datetime(when, usegmt=True)}
    wait = RetryPolicy(max_wait=30).wait(1, httpx.Response(503, headers=headers))
    assert 17 <= wait <= 20


def test_backoff_grows_with_full_jitter():
    policy = RetryPolicy(attempts=6, base=0.5, max_wait=4)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 4.0)]:
        waits = [policy.wait(attempt, httpx.Response(503)) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= ceiling and max(waits) > ceiling / 2


def test_recorded_retries_replay_in_order(tmp_path):
    dataset = many_turns(1, 1)
    with StubServer(fault_rate=1.0, seed=0) as stub:
        stub.random.choice = lambda faults: "429"  # every answer is a 429 with Retry-After
        provider = stub_providers(stub.base_url)[0]
        frame = replay(dataset, [provider], record_mode="all", cassette_dir=tmp_path,
                       progress=False, retry=RetryPolicy(attempts=3, base=5, max_wait=30))
    row = frame.iloc[0]
    assert (row["status"], row["http_status"], row["attempts"]) == ("error", 429, 3)
    offline = replay(dataset, [provider], cassette_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(frame, offline)


def test_kill_9_then_the_same_command_resumes_without_recalling_a_turn(tmp_path):
    dataset_path = tmp_path / "resume.jsonl"
    records = [{"id": f"r{c:02d}", "messages": [
        {"role": "user", "content": f"Question {t} of conversation {c}"} for t in range(1, 4)]}
        for c in range(12)]
    dataset_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "results.parquet"
    journal = tmp_path / "results.parquet.journal.jsonl"

    with StubServer(delay=0.05) as stub:
        providers_file = write_stub_provider(tmp_path / "providers.toml", stub.base_url)
        command = [sys.executable, "-m", "harness", "replay", str(dataset_path), "-p", "stub",
                   "--providers-file", str(providers_file), "--record-mode", "once",
                   "--cassettes", str(tmp_path / "cassettes"), "--concurrency", "2",
                   "--no-progress", "--out", str(out)]
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if journal.exists() and len(journal.read_text().splitlines()) > 12:
                break
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        done_before = len(journal.read_text().splitlines()) - 1  # minus the header
        sent_before = len(stub.requests)
        assert 0 < done_before < 36 and not out.exists()

        resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming" in resumed.stdout
        sent_after = len(stub.requests) - sent_before
        # no finished turn was sent again; at most the turns in flight at the kill were repeated
        assert sent_after <= 36 - done_before + 2
        assert not journal.exists()

        final = results.load(out)
        uninterrupted_out = tmp_path / "uninterrupted.parquet"
        clean = command[:]
        clean[clean.index(str(tmp_path / "cassettes"))] = str(tmp_path / "fresh-cassettes")
        clean[-1] = str(uninterrupted_out)
        assert subprocess.run(clean, cwd=ROOT, capture_output=True).returncode == 0
    expected = results.load(uninterrupted_out)
    assert len(final) == 36 and not final.duplicated(["conversation_id", "turn"]).any()
    measured = ["latency_ms", "e2e_ms", "output_tokens_per_s"]  # wall time, not replies
    pd.testing.assert_frame_equal(final.drop(columns=measured), expected.drop(columns=measured))


def test_rate_limit_spaces_requests_evenly(tmp_path):
    with StubServer() as stub:
        provider = stub_providers(stub.base_url)[0].model_copy(update={"rate_limit": 600.0})
        replay(many_turns(6, 1), [provider], record_mode="all", cassette_dir=tmp_path,
               concurrency=6, progress=False)
        arrivals = sorted(r["at"] for r in stub.requests)
    assert len(arrivals) == 6
    # 600 a minute: one every 0.1 s, though 6 were ready at once (without the limit they
    # arrive within milliseconds); the span, not each gap: a loaded machine delays single
    # arrivals, which shortens one gap as it lengthens the next
    assert arrivals[-1] - arrivals[0] >= 0.4


def test_an_interrupted_write_leaves_the_old_cassette_whole(tmp_path, monkeypatch):
    from harness import cassettes

    path = tmp_path / "c.yaml"
    cassettes.write_cassette(path, [])
    old = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the run were stopped mid-write

    monkeypatch.setattr(cassettes.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cassettes.write_cassette(path, [{"request": {}, "response": {}}])
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]  # no temp file left behind
