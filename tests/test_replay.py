"""The engine over real HTTP: record against the stub server, replay offline, compare."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import stub_providers
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import replay
from harness.cassettes import Cassette, MissingRecording, read_cassette, write_cassette
from harness.providers import Provider, ProviderConfigError, encode_body
from harness.results import COLUMNS


def test_record_then_replay_offline_gives_identical_results(stub, small_dataset, tmp_path):
    providers = stub_providers(stub.base_url)
    recorded = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path,
                      progress=False)
    sent = len(stub.requests)
    assert sent == 7 * len(providers)  # 7 user turns x 4 protocols
    assert list(recorded.columns) == list(COLUMNS)
    assert (recorded["status"] == "ok").all()
    assert recorded["latency_ms"].notna().all()

    stub.__exit__()  # nothing answers any more: replay must not need the network
    offline = replay(small_dataset, providers, cassette_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(recorded, offline)
    assert len(stub.requests) == sent


def test_an_offline_replay_makes_no_http_client(stub, small_dataset, tmp_path, monkeypatch):
    # TLS setup costs more than replaying a thousand turns: offline, none is made
    providers = stub_providers(stub.base_url)
    replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path, progress=False)

    def no_client(*args, **kwargs):
        raise AssertionError("an offline replay made an HTTP client")

    monkeypatch.setattr(httpx, "AsyncClient", no_client)
    offline = replay(small_dataset, providers, cassette_dir=tmp_path, progress=False)
    assert (offline["status"] == "ok").all() and len(offline) == 7 * len(providers)


def test_rows_follow_dataset_order_and_carry_usage(stub, small_dataset, tmp_path):
    frame = replay(small_dataset, stub_providers(stub.base_url)[:1], record_mode="all",
                   cassette_dir=tmp_path, progress=False)
    assert list(zip(frame["conversation_id"], frame["turn"], strict=True)) == [
        ("c1", 1), ("c1", 2), ("c2", 1), ("c2", 2), ("c3", 1), ("c3", 2), ("c3", 3)]
    assert frame["input_tokens"].dtype == "Int64"
    assert (frame["total_tokens"] == frame["input_tokens"] + frame["output_tokens"]).all()
    long_story = frame[(frame["conversation_id"] == "c2") & (frame["turn"] == 1)].iloc[0]
    assert long_story["finish_reason"] == "length"
    assert long_story["output_tokens"] == 40


def test_cassette_layout_is_one_vcrpy_file_per_conversation(stub, small_dataset, tmp_path):
    replay(small_dataset, stub_providers(stub.base_url), record_mode="all",
           cassette_dir=tmp_path, progress=False)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml"))
    assert files == sorted(f"small/{p}/{c}.yaml" for p in
                           ("stub-openai", "stub-cohere-v1", "stub-cohere-v2", "stub-anthropic")
                           for c in ("c1", "c2", "c3"))
    interactions = read_cassette(tmp_path / "small" / "stub-cohere-v1" / "c3.yaml")
    assert [i.request_json()["message"] for i in interactions] == [
        "Hello, I am Ada.", "What is my name?", "Thanks!"]


@pytest.mark.parametrize("history,expected", [
    # c1 has a dataset reply after turn 1; c3 has none
    ("reference", {"c1": ["Paris."], "c3": []}),
    ("self", {"c1": ["stub-gpt reply to turn 1"], "c3": ["stub-gpt reply to turn 1"]}),
    ("auto", {"c1": ["Paris."], "c3": ["stub-gpt reply to turn 1"]}),
])
def test_history_modes_choose_whose_replies_the_prompt_holds(stub, small_dataset, tmp_path,
                                                             history, expected):
    replay(small_dataset, stub_providers(stub.base_url)[:1], history=history, record_mode="all",
           cassette_dir=tmp_path, progress=False)
    second_turn_bodies = {}
    for request in stub.requests:
        users = [m for m in request["body"]["messages"] if m["role"] == "user"]
        if len(users) == 2 and users[0]["content"] in ("What is the capital of France?",
                                                        "Hello, I am Ada."):
            cid = "c1" if "France" in users[0]["content"] else "c3"
            second_turn_bodies[cid] = [m["content"] for m in request["body"]["messages"]
                                       if m["role"] == "assistant"]
    for cid, assistant_texts in expected.items():
        got = second_turn_bodies[cid]
        assert len(got) == len(assistant_texts)
        for text, prefix in zip(got, assistant_texts, strict=True):
            assert text.startswith(prefix)


def test_missing_recording_names_conversation_turn_and_provider(small_dataset, tmp_path):
    provider = Provider(name="openai-test", protocol="openai", base_url="http://127.0.0.1:9/v1",
                        model="m", api_key_env="OPENAI_API_KEY")
    with pytest.raises(MissingRecording) as err:
        replay(small_dataset, [provider], cassette_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "conversation 'c1'" in message and "turn 1" in message
    assert "'openai-test'" in message and "--record-mode once" in message


def test_missing_turn_inside_an_existing_cassette_is_named(stub, small_dataset, tmp_path):
    providers = stub_providers(stub.base_url)[:1]
    replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path, progress=False)
    path = tmp_path / "small" / "stub-openai" / "c3.yaml"
    text = path.read_text()
    path.write_text(text.replace("What is my name?", "What is my nickname?"))
    with pytest.raises(MissingRecording, match="conversation 'c3' turn 2 provider 'stub-openai'"):
        replay(small_dataset, providers, cassette_dir=tmp_path, progress=False)


def test_record_mode_once_records_only_what_is_missing(stub, small_dataset, tmp_path):
    providers = stub_providers(stub.base_url)[:1]
    replay(small_dataset, providers, record_mode="once", cassette_dir=tmp_path, progress=False)
    assert len(stub.requests) == 7
    (tmp_path / "small" / "stub-openai" / "c2.yaml").unlink()
    again = replay(small_dataset, providers, record_mode="once", cassette_dir=tmp_path,
                   progress=False)
    assert len(stub.requests) == 9  # only c2's two turns were sent again
    assert (again["status"] == "ok").all()


def test_recording_without_the_api_key_fails_before_any_call(stub, small_dataset, tmp_path,
                                                             monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_KEY", raising=False)
    providers = stub_providers(stub.base_url, api_key_env="HARNESS_TEST_KEY")[:1]
    with pytest.raises(ProviderConfigError, match="HARNESS_TEST_KEY is not set"):
        replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path,
               progress=False)
    assert stub.requests == []


def test_http_errors_become_error_rows_and_the_run_goes_on(small_dataset, tmp_path, monkeypatch):
    from harness.stub_server import StubServer

    monkeypatch.setenv("HARNESS_TEST_KEY", "wrong-key")
    with StubServer(api_key="right-key") as stub:
        providers = stub_providers(stub.base_url, api_key_env="HARNESS_TEST_KEY")[:1]
        frame = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path,
                       progress=False)
    assert len(frame) == 7  # every turn has its row
    first = frame.iloc[0]
    assert (first["status"], first["http_status"], first["finish_reason"]) == ("error", 401,
                                                                               "error")
    assert "invalid api key" in first["error"]
    skipped = frame[frame["status"] == "skipped"]
    # auto history: c1's turn 2 uses the dataset's reply; c2 and c3 need their failed turn 1
    assert list(zip(skipped["conversation_id"], skipped["turn"], strict=True)) == [
        ("c2", 2), ("c3", 2), ("c3", 3)]
    assert skipped["error"].str.contains("turn 1 failed").all()


FAKE_KEY = "sk-FAKE-abc123-secret-value-do-not-leak"


@pytest.mark.parametrize("auth_header,auth_scheme", [
    ("Authorization", "Bearer"),   # OpenAI, Together, Cohere, Groq, Mistral, OpenRouter
    ("Authorization", ""),         # AssemblyAI LLM Gateway: the bare key
    ("x-api-key", ""),             # Anthropic
    ("api-key", ""),               # Azure OpenAI
    ("x-goog-api-key", ""),        # Gemini
])
def test_no_written_file_holds_the_api_key(tmp_path, small_dataset, monkeypatch, auth_header,
                                           auth_scheme):
    from harness import results
    from harness.stub_server import StubServer

    monkeypatch.setenv("HARNESS_TEST_KEY", FAKE_KEY)
    with StubServer(api_key=FAKE_KEY) as stub:
        provider = stub_providers(stub.base_url, api_key_env="HARNESS_TEST_KEY")[0].model_copy(
            update={"auth_header": auth_header, "auth_scheme": auth_scheme})
        frame = replay(small_dataset, [provider], record_mode="all",
                       cassette_dir=tmp_path / "cassettes", progress=False)
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    for suffix in (".parquet", ".csv", ".jsonl"):
        results.save(frame, tmp_path / f"results{suffix}")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 8  # 3 cassettes, 3 results files, the CSV's and JSONL's .run.json
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
        assert b"abc123" not in path.read_bytes(), path


def test_keys_echoed_in_query_strings_and_bodies_are_scrubbed(tmp_path):
    cassette = Cassette.open(tmp_path / "c.yaml", "all", [FAKE_KEY])
    request = httpx.Request("POST", f"https://example.test/v1/x?key={FAKE_KEY}&alt=json",
                            headers={"cookie": "session=1"}, content=b'{"a": 1}')
    response = httpx.Response(401, headers={"set-cookie": "id=2"},
                              content=f'{{"error": "bad key {FAKE_KEY}"}}'.encode())
    cassette.record(request, response, 12.0)
    cassette.save()
    text = (tmp_path / "c.yaml").read_text()
    assert FAKE_KEY not in text
    assert "session=1" not in text and "id=2" not in text
    (interaction,) = read_cassette(tmp_path / "c.yaml")
    assert "alt=json" in interaction.uri


def test_json_cassettes_round_trip_and_load_in_vcrpy(stub, small_dataset, tmp_path):
    from vcr.persisters.filesystem import FilesystemPersister
    from vcr.serializers import jsonserializer

    providers = stub_providers(stub.base_url)[:2]
    recorded = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path,
                      serializer="json", progress=False)
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 6 and not list(tmp_path.rglob("*.yaml"))
    requests, responses = FilesystemPersister.load_cassette(files[0], jsonserializer)
    assert len(requests) == len(responses) >= 1
    offline = replay(small_dataset, providers, cassette_dir=tmp_path, serializer="json",
                     progress=False)
    pd.testing.assert_frame_equal(recorded, offline)


def test_bodies_are_sent_compact_and_older_spaced_recordings_still_replay(stub, small_dataset,
                                                                          tmp_path):
    providers = stub_providers(stub.base_url)[:2]
    recorded = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path,
                      serializer="json", progress=False)
    files = sorted(tmp_path.rglob("*.json"))
    for path in files:  # what was sent is what was recorded: compact JSON, keys in order
        data = json.loads(path.read_text(encoding="utf-8"))
        for interaction in data["interactions"]:
            body = interaction["request"]["body"]
            assert body == json.dumps(json.loads(body), ensure_ascii=False,
                                      separators=(",", ":"))
            # as json.dumps writes it: the bodies of earlier harness versions and other tools
            interaction["request"]["body"] = json.dumps(json.loads(body), ensure_ascii=False)
        path.write_text(json.dumps(data), encoding="utf-8")
    stub.__exit__()
    offline = replay(small_dataset, providers, cassette_dir=tmp_path, serializer="json",
                     progress=False)
    pd.testing.assert_frame_equal(recorded, offline)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(bodies=st.lists(st.dictionaries(st.text(), JSON, max_size=5), min_size=2, max_size=4,
                      unique_by=lambda body: json.dumps(body, sort_keys=True)))
def test_a_body_matches_its_recording_however_json_dumps_spaced_it(bodies):
    url = "http://127.0.0.1:1/v1/chat/completions"
    recordings = [{"request": {"body": json.dumps(b, ensure_ascii=False), "headers": {},
                               "method": "POST", "uri": url},
                   "response": {"body": {"string": str(i)}, "headers": {},
                                "status": {"code": 200, "message": "OK"}}}
                  for i, b in enumerate(bodies)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.json"
        write_cassette(path, recordings)
        in_order, out_of_order = Cassette.open(path), Cassette.open(path)
    for i, body in enumerate(bodies):
        sent = encode_body(body)
        assert json.loads(sent) == body
        assert in_order.take("POST", url, sent).response_body == str(i).encode()
    assert in_order._by_key is None  # in recorded order: no recording parsed into the index
    for i, body in reversed(list(enumerate(bodies))):  # else the index answers
        hit = out_of_order.take("POST", url, encode_body(body))
        assert json.loads(hit.request_body) == body and hit.response_body == str(i).encode()


def _columns(rows):
    from harness.results import ResultColumns

    held = ResultColumns()
    for row in rows:
        held.append(row)
    return held


@pytest.mark.parametrize("held", [list, _columns], ids=["rows", "columns"])
def test_results_have_the_documented_dtypes_whether_rows_are_typed_or_loose(held):
    """Rows given as TurnResults, or held as columns as a run holds them, give one frame."""
    from harness.results import COLUMNS, DTYPES, TurnResult, to_frame

    typed = TurnResult("c1", 1, "p", response="hi", input_tokens=3, latency_ms=12.5,
                       attempts=1, http_status=200)
    # as a journal read back from JSON gives them: 4.0 tokens, a whole-number latency
    loose = TurnResult("c0", 2, "p", response="yo", input_tokens=4.0, latency_ms=7, attempts=1)
    for rows in ([typed], [typed, loose], []):
        frame = to_frame(held(rows), order=["c0", "c1"])
        assert list(frame.columns) == list(COLUMNS)
        assert {c: str(frame[c].dtype) for c in COLUMNS} == DTYPES
    assert frame.empty
    frame = to_frame(held([typed, loose]), order=["c0", "c1"])
    assert list(frame["conversation_id"]) == ["c0", "c1"]
    assert list(frame["input_tokens"]) == [4, 3] and list(frame["latency_ms"]) == [7.0, 12.5]
    assert frame["http_status"].isna().tolist() == [True, False]
    assert list(frame["response"]) == ["yo", "hi"]


def test_a_journaled_run_emits_each_conversation_in_turn_order_and_stops_on_an_on_row_error(
        stub, tmp_path):
    """With a journal the saves go in batches while conversations go on: still, every row
    reaches on_row and the journal in turn order within its conversation, each once; an error
    raised by on_row stops the run with that error."""
    from harness.datasets import from_records

    data = from_records([{"id": f"c{c}", "messages": [
        {"role": "user", "content": f"conversation {c} question {t}"} for t in range(1, 5)]}
        for c in range(12)], name="ordered")
    provider = stub_providers(stub.base_url)[0]
    seen = []
    frame = replay(data, [provider], history="self", record_mode="all", cassette_dir=tmp_path,
                   journal=tmp_path / "run.journal.jsonl", concurrency=12, progress=False,
                   on_row=lambda row: seen.append((row.conversation_id, row.turn)))
    assert len(frame) == len(seen) == 48 and (frame["status"] == "ok").all()
    for c in range(12):
        assert [t for cid, t in seen if cid == f"c{c}"] == [1, 2, 3, 4]

    class Stop(Exception):
        pass

    def stop(row) -> None:
        if row.turn == 2:
            raise Stop

    with pytest.raises(Stop):
        replay(data, [provider], history="self", record_mode="all",
               cassette_dir=tmp_path / "stopped", journal=tmp_path / "stopped.journal.jsonl",
               concurrency=12, progress=False, on_row=stop)


def test_a_run_leaves_the_garbage_collector_as_it_found_it(stub, small_dataset, tmp_path):
    # the engine collects less often while it runs (a third of its CPU went to the collector
    # with hundreds of conversations in flight); the caller's settings come back after
    import gc

    before = gc.get_threshold()
    gc.set_threshold(1234, 7, 9)
    during = []
    try:
        provider = stub_providers(stub.base_url)[:1]
        replay(small_dataset, provider, record_mode="all", cassette_dir=tmp_path,
               progress=False, on_row=lambda row: during.append(gc.get_threshold()))
        assert during and all(t[0] > 1234 and t[1:] == (7, 9) for t in during)
        assert gc.get_threshold() == (1234, 7, 9) and gc.get_freeze_count() == 0

        def stop(row):
            raise RuntimeError("stopped by on_row")

        with pytest.raises(RuntimeError, match="stopped by on_row"):  # one that fails too
            replay(small_dataset, provider, cassette_dir=tmp_path, progress=False, on_row=stop)
        assert gc.get_threshold() == (1234, 7, 9) and gc.get_freeze_count() == 0
        gc.freeze()  # the caller's own frozen objects stay frozen (less any freed meanwhile)
        replay(small_dataset, provider, cassette_dir=tmp_path, progress=False)
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (1234, 7, 9)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_failed_last_save_stops_a_run_with_no_journal(stub, tmp_path, monkeypatch):
    """A conversation's worker goes on while its last save is on the way to the disk: a save
    that fails still stops the run, with its one-line error, before the dataset is sent."""
    import errno
    import os

    from harness import cassettes
    from harness.datasets import from_records

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    data = from_records([{"id": f"c{c}", "messages": [{"role": "user", "content": f"q{c}"}]}
                         for c in range(200)], name="full")
    monkeypatch.setattr(cassettes.os, "fsync", full)
    with pytest.raises(cassettes.CassetteWriteError, match="No space left on device"):
        replay(data, stub_providers(stub.base_url)[:1], record_mode="all",
               cassette_dir=tmp_path, concurrency=2, progress=False)
    assert 0 < len(stub.requests) < len(data)
    assert not list(tmp_path.rglob("*.yaml"))  # no cassette claims to be complete


def test_a_failed_save_of_a_last_turn_never_finishes_its_cassette(stub, tmp_path, monkeypatch):
    """The disk is full for the one write that holds a conversation's last turn: that
    conversation's cassette stays unfinished (a finished one would claim turns it lacks),
    and running again resumes it without sending a journaled turn twice."""
    import errno
    import os
    import threading
    import time

    from harness import cassettes
    from harness.datasets import from_records

    data = from_records([{"id": "c0", "messages": [
        {"role": "user", "content": f"question {t}"} for t in range(1, 4)]}], name="last")
    provider = stub_providers(stub.base_url)[:1]
    write, fsync, failing = cassettes.Cassette.write, os.fsync, threading.Event()

    def write_once(self, recorded, finished, **kwargs):
        if not failing.is_set() and "question 3" in repr(recorded):
            failing.set()  # this write's fsync fails
        return write(self, recorded, finished, **kwargs)

    def full_once(fd: int) -> None:
        if threading.current_thread().name == "harness-saver" and failing.is_set() \
                and not getattr(full_once, "done", False):
            full_once.done = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    save = cassettes.CassetteSaver.save

    def save_alone(self, cassette, finished=True):  # a batch of its own: the finish comes after
        done = save(self, cassette, finished)
        if not finished:
            time.sleep(0.05)
        return done

    monkeypatch.setattr(cassettes.CassetteSaver, "save", save_alone)
    monkeypatch.setattr(cassettes.Cassette, "write", write_once)
    monkeypatch.setattr(cassettes.os, "fsync", full_once)
    journal = tmp_path / "run.journal.jsonl"
    run = dict(history="self", record_mode="once", cassette_dir=tmp_path / "cassettes",
               journal=journal, concurrency=1, progress=False)
    with pytest.raises(cassettes.CassetteWriteError, match="No space left on device"):
        replay(data, provider, **run)
    assert full_once.done
    assert not list(tmp_path.rglob("c0.yaml"))  # unfinished: its partial file remains
    sent = len(stub.requests)
    assert sent == 3

    frame = replay(data, provider, **run)
    assert (frame["status"] == "ok").all() and list(frame["turn"]) == [1, 2, 3]
    (cassette,) = tmp_path.rglob("c0.yaml")
    assert len(read_cassette(cassette)) == 3
    assert len(stub.requests) - sent <= 1  # at most the turn whose recording was lost
