"""Replay at scale is correct: thousands of recordings, each turn gets its own, in order.

(How fast is for bench/replay_scale.py: no test here looks at the clock.)
"""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from test_resume import KILLER

from harness import replay, results
from harness.cassettes import Cassette, CassetteSaver, cassette_path, read_cassette, write_cassette
from harness.cli import main
from harness.datasets import conversation_turns, from_records
from harness.messages import AssistantMessage
from harness.providers import Provider

PROVIDER = Provider(name="scale-openai", protocol="openai", base_url="https://api.example.test/v1",
                    model="gpt-scale", params={"max_tokens": 64})
QUESTIONS = ["What is a prime number?", "Name one.", "And the next one?", "Why does that matter?"]


def reply_text(conversation_id: str, turn: int) -> str:
    return f"Answer to turn {turn} of {conversation_id}."


def completion(conversation_id: str, turn: int, status: int = 200) -> dict:
    """A recorded exchange's response part, as `Cassette.record` writes it."""
    if status != 200:
        body = {"error": {"message": "slow down", "type": "rate_limit"}}
    else:
        body = {"id": f"chatcmpl-{conversation_id}-{turn}", "object": "chat.completion",
                "model": "gpt-scale", "choices": [{
                    "index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": reply_text(conversation_id, turn)}}],
                "usage": {"prompt_tokens": 10 * turn, "completion_tokens": turn,
                          "total_tokens": 11 * turn}}
    return {"body": {"string": json.dumps(body, indent=2)},
            "headers": {"content-type": ["application/json"], "x-harness-latency-ms": ["12.5"]},
            "status": {"code": status, "message": "OK" if status == 200 else "Too Many Requests"}}


def exchange(body: dict, response: dict) -> dict:
    content = json.dumps(body, ensure_ascii=False)  # what replay.py sends
    return {"request": {"body": content, "method": "POST", "uri": PROVIDER.url,
                        "headers": {"content-type": ["application/json"]}},
            "response": response}


def generated(tmp_path, conversations: int, serializer: str):
    """`conversations` dialogues of 4 user turns, MT-Bench style (no dataset replies, so each
    prompt holds the provider's own earlier replies), all with the same questions: only the
    conversation id tells their recordings apart. Recorded straight into harness's layout."""
    dataset = from_records([{"id": f"conv-{n:04d}", "messages": [
        {"role": "user", "content": q} for q in QUESTIONS]} for n in range(conversations)],
        name="scale")
    for conversation in dataset.conversations:
        interactions, history = [], []
        for turn in conversation_turns(conversation):
            prefix = [*history, turn.prefix[-1]]
            body = PROVIDER.build_body(prefix, {})
            interactions.append(exchange(body, completion(conversation.id, turn.turn)))
            history = [*prefix, AssistantMessage(content=reply_text(conversation.id, turn.turn))]
        write_cassette(cassette_path(tmp_path, dataset.name, PROVIDER.name, conversation.id,
                                     serializer), interactions)
    return dataset


@pytest.mark.parametrize("serializer,conversations", [("yaml", 500), ("json", 500)])
def test_2k_generated_turns_replay_each_with_its_own_recording(tmp_path, serializer,
                                                                conversations):
    dataset = generated(tmp_path, conversations, serializer)
    frame = replay(dataset, [PROVIDER], record_mode="none", cassette_dir=tmp_path,
                   serializer=serializer, progress=False)

    assert len(frame) == 4 * conversations == 2000
    assert (frame["status"] == "ok").all(), frame["error"].dropna().head().tolist()
    expected = [(f"conv-{n:04d}", t) for n in range(conversations) for t in range(1, 5)]
    assert list(zip(frame["conversation_id"], frame["turn"], strict=True)) == expected
    assert frame["response"].tolist() == [reply_text(c, t) for c, t in expected]
    assert frame["response_id"].tolist() == [f"chatcmpl-{c}-{t}" for c, t in expected]
    assert frame["input_tokens"].tolist() == [10 * t for _, t in expected]
    assert (frame["http_status"] == 200).all() and (frame["latency_ms"] == 12.5).all()
    assert (frame["attempts"] == 1).all()


@pytest.mark.parametrize("mode", ["none", "new_episodes"])
def test_a_replay_from_cassettes_holds_only_the_cassettes_in_use(tmp_path, monkeypatch, mode):
    """A replay served from cassettes never waits on the network, so nothing made a worker
    yield: each conversation's finish waited to the end, holding its cassette, and at 100k
    turns the cyclic collector spent a third of the replay scanning them."""
    dataset = generated(tmp_path, 300, "json")
    opened: list[weakref.ref] = []
    most = [0]
    real_open = Cassette.open.__func__

    def tracked_open(cls, *args, **kwargs):
        cassette = real_open(cls, *args, **kwargs)
        opened.append(weakref.ref(cassette))
        return cassette

    def on_row(_row) -> None:
        gc.collect()  # what is still alive is held, not merely uncollected
        most[0] = max(most[0], sum(ref() is not None for ref in opened))

    monkeypatch.setattr(Cassette, "open", classmethod(tracked_open))
    frame = replay(dataset, [PROVIDER], record_mode=mode, cassette_dir=tmp_path,
                   serializer="json", progress=False, on_row=on_row)

    assert len(frame) == 1200 and (frame["status"] == "ok").all()
    assert 1 <= most[0] <= 100, f"{most[0]} of 300 cassettes held at once"


def test_a_journaled_replay_from_cassettes_queues_no_save(tmp_path, monkeypatch):
    """Every turn recorded: mode new_episodes with a journal (as the CLI runs) sends nothing
    and has nothing to write, so it hands the saver thread nothing (it used to queue a save
    per turn and per conversation, which cost as much as the rest of the replay)."""
    dataset = generated(tmp_path, 50, "json")
    files = sorted((tmp_path / "scale").rglob("*.json"))
    before = [f.read_bytes() for f in files]
    queued = []
    real_save = CassetteSaver.save

    def counting_save(self, cassette, finished=True):
        queued.append(cassette.path)
        return real_save(self, cassette, finished)

    monkeypatch.setattr(CassetteSaver, "save", counting_save)
    frame = replay(dataset, [PROVIDER], record_mode="new_episodes", cassette_dir=tmp_path,
                   serializer="json", progress=False, journal=tmp_path / "run.journal.jsonl")

    assert len(frame) == 200 and (frame["status"] == "ok").all()
    assert queued == []
    assert sorted((tmp_path / "scale").rglob("*.json")) == files
    assert [f.read_bytes() for f in files] == before


def test_identical_requests_get_their_recordings_in_order(tmp_path):
    path = tmp_path / "same.yaml"
    same, other = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, {"x": 1}
    write_cassette(path, [exchange(same, completion("same", 1)),
                          exchange(other, completion("other", 1)),
                          exchange(same, completion("same", 2)),
                          exchange(same, completion("same", 3))])
    cassette = Cassette.open(path)

    def ask(body: bytes) -> str | None:
        played = cassette.play(httpx.Request("POST", PROVIDER.url, content=body))
        return None if played is None else played[0].json()["id"]

    compact = json.dumps(same).encode()
    reordered = b'{ "messages": [{"content": "hi", "role": "user"}], "model": "m" }'
    # the k-th identical request (as JSON: key order and spacing aside) gets the k-th recording
    assert ask(compact) == "chatcmpl-same-1"
    assert ask(reordered) == "chatcmpl-same-2"
    assert ask(compact) == "chatcmpl-same-3"
    assert ask(compact) is None  # used up: never replayed twice
    assert ask(json.dumps(other).encode()) == "chatcmpl-other-1"


def test_a_byte_identical_recording_does_not_jump_an_earlier_equal_one(tmp_path):
    path = tmp_path / "spelled.json"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    spaced = exchange(body, completion("spaced", 1))
    spaced["request"]["body"] = json.dumps(body, indent=4)  # the same JSON, spelled otherwise
    write_cassette(path, [spaced, exchange(body, completion("compact", 1))])
    cassette = Cassette.open(path)
    sent = json.dumps(body, ensure_ascii=False).encode()  # byte for byte the second recording
    answers = [cassette.take("POST", PROVIDER.url, sent) for _ in range(3)]
    assert [json.loads(a.response_body)["id"] for a in answers[:2]] == [
        "chatcmpl-spaced-1", "chatcmpl-compact-1"]
    assert answers[2] is None


def test_a_recorded_retry_replays_before_the_answer_that_followed_it(tmp_path):
    dataset = from_records([{"id": "c", "messages": [{"role": "user", "content": "hi"}]}],
                           name="retry")
    body = PROVIDER.build_body(list(conversation_turns(dataset.conversations[0])[0].prefix), {})
    path = cassette_path(tmp_path, "retry", PROVIDER.name, "c", "json")
    write_cassette(path, [exchange(body, completion("c", 1, status=429)),
                          exchange(body, completion("c", 1))])
    frame = replay(dataset, [PROVIDER], cassette_dir=tmp_path, serializer="json", progress=False)
    row = frame.iloc[0]
    assert (row["status"], row["http_status"], row["attempts"]) == ("ok", 200, 2)
    assert row["response"] == reply_text("c", 1)
    assert len(read_cassette(path)) == 2  # replay reads, never rewrites


# --- results streamed to Parquet ---------------------------------------------------------------


def dataset_file(tmp_path, dataset) -> tuple[list[str], Path]:
    """The CLI arguments that replay `dataset` (written as JSONL) offline against PROVIDER."""
    path = tmp_path / f"{dataset.name}.jsonl"
    path.write_text("".join(json.dumps({"id": c.id, "messages": [
        {"role": m.role, "content": m.content} for m in c.messages]}) + "\n"
        for c in dataset.conversations))
    providers = tmp_path / "providers.toml"
    providers.write_text(f'[providers.{PROVIDER.name}]\nprotocol = "openai"\n'
                         f'base_url = "{PROVIDER.base_url}"\nmodel = "{PROVIDER.model}"\n'
                         'params = { max_tokens = 64 }\n')
    return ["replay", str(path), "-p", PROVIDER.name, "--providers-file", str(providers),
            "--cassettes", str(tmp_path), "--no-progress"], path


def test_a_replay_streamed_to_parquet_equals_the_frame_in_memory(tmp_path, monkeypatch):
    dataset = generated(tmp_path, 300, "yaml")
    held = replay(dataset, [PROVIDER], cassette_dir=tmp_path, progress=False, concurrency=16)
    monkeypatch.setattr(results, "ROW_GROUP_ROWS", 100)  # many row groups, rows out of order
    out = tmp_path / "out" / "results.parquet"
    returned = replay(dataset, [PROVIDER], cassette_dir=tmp_path, progress=False,
                      concurrency=16, out=out)
    assert pq.ParquetFile(out).metadata.num_row_groups >= 10
    pd.testing.assert_frame_equal(results.load(out), held)  # every row, in dataset order
    assert results.load(out).attrs["run"]["dataset"] == "scale"
    # what comes back holds no texts: the summary's columns, equal to the held frame's
    assert list(returned.columns) == list(results.SUMMARY_COLUMNS)
    pd.testing.assert_frame_equal(returned, held[list(results.SUMMARY_COLUMNS)])
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.parquet"]


def test_a_killed_streamed_run_leaves_out_as_it_was_and_the_same_command_resumes(tmp_path):
    dataset = generated(tmp_path, 120, "yaml")
    argv, _ = dataset_file(tmp_path, dataset)
    out = tmp_path / "results.parquet"
    out.write_bytes(b"an earlier run's results")
    argv += ["--out", str(out), "--concurrency", "8"]
    killed = subprocess.run(  # killed once two row groups are in the hidden partial file
        [sys.executable, "-c", ROW_GROUPS_OF_40 + KILLER,
         "harness.results:ParquetSink._write:2:after", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert out.read_bytes() == b"an earlier run's results"  # never half written
    assert results.partial_results(out).exists()
    assert main(argv) == 0
    expected = replay(dataset, [PROVIDER], cassette_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(results.load(out).drop(columns="cost_usd"),
                                  expected.drop(columns="cost_usd"))
    assert not results.partial_results(out).exists()
    assert not Path(f"{out}.journal.jsonl").exists()


ROW_GROUPS_OF_40 = "import harness.results; harness.results.ROW_GROUP_ROWS = 40\n"


def test_cli_out_parquet_prints_the_same_summary(tmp_path, capsys):
    dataset = generated(tmp_path, 50, "json")
    argv, _ = dataset_file(tmp_path, dataset)
    argv += ["--cassette-format", "json"]
    assert main(argv) == 0
    alone = capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "r.parquet")]) == 0
    streamed = capsys.readouterr().out
    assert "200" in alone and "Summary" in alone
    assert streamed.startswith(alone.rstrip("\n"))
    assert f"wrote 200 rows to {tmp_path / 'r.parquet'}" in streamed.replace("\n", "")


@pytest.mark.parametrize("odd", [None, "12"])  # "12": a count Arrow will not take as an int
def test_rows_made_arrow_batches_as_they_come_give_the_same_frame(monkeypatch, odd):
    """A run's rows become Arrow batches every `ResultColumns.BATCH` rows; the frame is the
    one the same rows make at once, also when a later row holds a value pandas must coerce."""
    rows = [results.TurnResult(conversation_id=f"c{i // 4}", turn=i % 4 + 1, provider="p",
                               model="m", response=f"reply {i}", finish_reason="stop",
                               input_tokens=odd if odd and i == 9 else i, output_tokens=2 * i,
                               latency_ms=i / 3, status="ok", attempts=1)
            for i in range(23)]
    monkeypatch.setattr(results.ResultColumns, "BATCH", 4)
    columns = results.ResultColumns()
    for row in rows:
        columns.append(row)
    assert len(columns) == 23 and len(columns.batches) == (5 if odd is None else 2)
    expected = results.to_frame(rows)
    pd.testing.assert_frame_equal(results.to_frame(columns), expected)
    assert expected["input_tokens"].tolist()[9] == (12 if odd else 9)


def test_a_replay_whose_rows_fill_many_batches_gives_the_same_frame(tmp_path, monkeypatch):
    dataset = generated(tmp_path, 50, "json")
    whole = replay(dataset, [PROVIDER], cassette_dir=tmp_path, serializer="json",
                   progress=False, concurrency=8)
    monkeypatch.setattr(results.ResultColumns, "BATCH", 7)  # 200 rows, out of order: 28 batches
    batched = replay(dataset, [PROVIDER], cassette_dir=tmp_path, serializer="json",
                     progress=False, concurrency=8)
    pd.testing.assert_frame_equal(batched, whole)
    pairs = zip(batched["conversation_id"], batched["turn"], strict=True)
    assert batched["response"].tolist() == [reply_text(c, t) for c, t in pairs]
