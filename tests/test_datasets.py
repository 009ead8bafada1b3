"""Dataset loading: every supported format, turns, frames and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.datasets import (
    Dataset,
    DatasetError,
    conversation_turns,
    from_records,
    load_dataset,
)

DATA = Path(__file__).resolve().parent / "data" / "datasets"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "datasets"

# PROVENANCE.md: conversations, user turns, user turns with a reference reply.
SHARED_COUNTS = {
    "mt_bench_question.jsonl": (80, 160, 0),
    "ja_mt_bench_question.jsonl": (80, 160, 0),
    "mtbench101.jsonl": (1388, 4208, 4208),
    "mt-eval_mt-bench_extended.jsonl": (80, 400, 400),
    "sharegpt_fastchat_dummy.json": (500, 1000, 1000),
    "sharegpt_glaive_toolcall_en_demo.json": (300, 746, 746),
    "tau-bench_gpt-4o-airline.json": (200, 1490, None),
    "cohere_convfinqa_eval_chat.jsonl": (421, 1490, 1490),
}


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return path


def n_turns(ds: Dataset) -> int:
    return sum(len(c.user_turns()) for c in ds)


# -- the shared real-world files ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHARED_COUNTS))
def test_shared_dataset_loads_with_provenance_counts(name):
    ds = load_dataset(shared(name))
    convs, turns, with_reference = SHARED_COUNTS[name]
    assert ds.name == Path(name).stem
    assert (len(ds), n_turns(ds), len(ds.turns())) == (convs, turns, turns)
    assert len({c.id for c in ds}) == convs
    if with_reference is not None:
        assert sum(t.reference is not None for t in ds.turns()) == with_reference
    assert len(ds.turns_frame()) == turns
    assert len(ds.to_frame()) == sum(len(c.messages) for c in ds)


@pytest.mark.parametrize(("answers", "answered"), [
    ("mt_bench_answer_gpt-4o.jsonl", 80),
    ("mt_bench_reference_gpt-4.jsonl", 30),
])
def test_mt_bench_joined_with_answers_gives_references(answers, answered):
    ds = load_dataset(shared("mt_bench_question.jsonl"), answers=shared(answers))
    assert (len(ds), n_turns(ds)) == (80, 160)
    full = [c for c in ds if [m.role for m in c.messages] == ["user", "assistant"] * 2]
    assert len(full) == answered
    assert sum(t.reference is not None for t in ds.turns()) == 2 * answered
    assert all(c.metadata["category"] for c in ds)


def test_japanese_mt_bench_joins_its_references():
    ds = load_dataset(shared("ja_mt_bench_question.jsonl"),
                      answers=shared("ja_mt_bench_reference_gpt-4o.jsonl"))
    assert sum(t.reference is not None for t in ds.turns()) == 160


def test_mt_bench_without_answers_has_no_references():
    ds = load_dataset(shared("mt_bench_question.jsonl"))
    turns = ds.turns()
    assert all(t.reference is None for t in turns)
    first = [t for t in turns if t.conversation_id == "81"]
    assert [t.turn for t in first] == [1, 2]
    assert [m.role for m in first[1].prefix] == ["user", "user"]
    assert ds.conversations[0].metadata["category"] == "writing"


@pytest.mark.parametrize("name", ["mt_bench_answer_gpt-4o.jsonl", "tau-bench_airline_tools.json"])
def test_companion_files_are_not_datasets(name):
    path = shared(name)
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert "\n" not in msg
    if name.endswith("tools.json"):
        assert msg.startswith(f"{path}:2: record 1: no recognizable conversation")
        assert "tool schema" in msg
    else:
        assert msg.startswith(f"{path}:1: ") and "answers=" in msg


def test_tau_bench_tool_calls_pair_and_duplicate_task_ids_stay_unique():
    ds = load_dataset(shared("tau-bench_gpt-4o-airline.json"))
    assert ds.conversations[0].id == "0"
    assert sum(c.id.endswith("#2") for c in ds) == 50  # 4 trials of each of 50 tasks
    for conv in ds:
        assert conv.messages[0].role == "system"
        seen: set[str | None] = set()
        for m in conv.messages:
            if m.role == "assistant":
                seen.update(c.id for c in m.tool_calls)
            elif m.role == "tool":
                assert m.tool_call_id in seen
    assert isinstance(ds.conversations[0].metadata["info"], dict)
    assert {"task_id", "trial", "reward"} <= set(ds.turns_frame().columns)


def test_glaive_function_calls_become_tool_calls():
    ds = load_dataset(shared("sharegpt_glaive_toolcall_en_demo.json"))
    calls = [c for conv in ds for m in conv.messages if m.role == "assistant"
             for c in m.tool_calls]
    assert len(calls) == 211
    assert all(json.loads(c.arguments) is not None for c in calls)
    assert all("tools" not in c.metadata for c in ds)  # schemas became Conversation.tools
    assert any(c.tools for c in ds)


def test_limit_stops_early():
    ds = load_dataset(shared("mtbench101.jsonl"), limit=5)
    assert [c.id for c in ds] == ["1", "2", "3", "4", "5"]


# -- formats -----------------------------------------------------------------------------------


def test_one_file_may_mix_every_record_format():
    ds = load_dataset(DATA / "mixed_formats.jsonl")
    ids = [c.id for c in ds]
    assert ids == ["openai", "mixed_formats-3", "sharegpt", "81", "7", "82", "mixed_formats-8",
                   "3", "last"]
    by = {c.id: c for c in ds}
    roles = {i: [m.role for m in c.messages] for i, c in by.items()}

    openai = by["openai"]
    assert roles["openai"] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert openai.messages[1].content == "Weather in\nParis?"
    call = openai.messages[2].tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == ("call_a", "weather",
                                                               {"city": "Paris"})
    assert openai.messages[3].tool_call_id == "call_a"
    assert openai.metadata == {"category": "geo"}

    assert roles["mixed_formats-3"] == ["system", "user", "assistant", "user", "assistant"]
    assert roles["sharegpt"] == ["system", "user", "assistant"]
    assert by["sharegpt"].messages[0].content == "You are Vicuna."
    assert roles["81"] == ["user", "user"]
    assert by["81"].metadata == {"question_id": 81, "category": "writing"}
    assert roles["7"] == ["user", "assistant"] * 2
    assert by["7"].metadata == {"task": "GR"}
    assert roles["82"] == ["user", "assistant"]
    assert roles["mixed_formats-8"] == ["system", "user", "assistant", "user"]
    assert by["mixed_formats-8"].messages[-1].content == "How are you?"
    assert by["mixed_formats-8"].metadata == {"tag": "v1"}
    assert roles["3"] == ["user", "assistant"]
    assert by["3"].metadata == {"task_id": 3, "reward": 1.0}


def test_sharegpt_function_call_and_observation():
    ds = load_dataset(DATA / "sharegpt_tools.json")
    assert [c.id for c in ds] == ["sharegpt_tools-1", "sharegpt_tools-2"]
    conv = ds.conversations[0]
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"] * 2
    first, second = conv.messages[1].tool_calls[0], conv.messages[5].tool_calls[0]
    assert json.loads(first.arguments) == {"amount": 10, "to": "EUR"}
    assert first.id != second.id
    assert [conv.messages[2].tool_call_id, conv.messages[6].tool_call_id] == [first.id, second.id]
    assert conv.tools[0].name == "convert" and conv.tools[0].description == "Convert currency"
    assert [t.reference for t in conversation_turns(conv)] == ["10 USD is 9.20 EUR.", "18.40 EUR."]


def test_legacy_function_call_and_function_role_pair_up():
    ds = from_records([{"messages": [
        USER,
        {"role": "assistant", "content": None,
         "function_call": {"name": "clock", "arguments": "{}"}},
        {"role": "function", "name": "clock", "content": "12:00"},
        {"role": "assistant", "content": "It is noon."}]}])
    call, result = ds.conversations[0].messages[1].tool_calls[0], ds.conversations[0].messages[2]
    assert (call.name, result.role, result.name) == ("clock", "tool", "clock")
    assert result.tool_call_id == call.id == "call_1"


def test_a_single_pretty_printed_document():
    ds = load_dataset(DATA / "pretty_document.json")
    assert [c.id for c in ds] == ["doc"]
    assert ds.turns()[0].reference == "Loaded."


def test_layouts_detected_from_content_not_extension(tmp_path):
    records = [{"messages": [{"role": "user", "content": f"hi {i}"}]} for i in range(3)]
    variants = {
        "lines.json": "\ufeff" + "\r\n\r\n".join(json.dumps(r) for r in records) + "\r\n",
        "array.jsonl": json.dumps(records, indent=2),
        "one_line_array.txt": json.dumps(records),
        "concatenated.data": "\n".join(json.dumps(r, indent=1) for r in records),
    }
    for name, text in variants.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        ds = load_dataset(path)
        assert [c.messages[0].content for c in ds] == ["hi 0", "hi 1", "hi 2"], name
    assert [c.id for c in load_dataset(tmp_path / "lines.json")] == [
        "lines-1", "lines-3", "lines-5"]  # JSONL: the line number
    assert [c.id for c in load_dataset(tmp_path / "array.jsonl")] == [
        "array-1", "array-2", "array-3"]  # JSON array: the record index


def test_duplicate_ids_get_a_deterministic_suffix():
    msgs = [{"role": "user", "content": "x"}]
    ds = from_records([{"id": "a", "messages": msgs}, {"id": "a", "messages": msgs},
                       {"conversation_id": "a", "messages": msgs}, {"messages": msgs}],
                      name="dup")
    assert [c.id for c in ds] == ["a", "a#2", "a#3", "dup-4"]


def test_a_huge_line_loads(tmp_path):
    big = "x" * 8_000_000
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": big}]}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "small"}]}) + "\n")
    ds = load_dataset(path)
    assert [len(c.messages[0].content) for c in ds] == [len(big), 5]


# -- turns -------------------------------------------------------------------------------------


def test_turns_prefix_reference_and_numbering():
    ds = from_records([{"id": "c", "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "t", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t", "content": {"ok": True}},
        {"role": "assistant", "content": "A2"},
        {"role": "user", "content": "Q3"}]}])
    turns = ds.turns()
    assert [(t.turn, t.index, t.prompt, t.reference) for t in turns] == [
        (1, 1, "Q1", "A1"), (2, 3, "Q2", "A2"), (3, 7, "Q3", None)]
    assert [m.content for m in turns[1].prefix] == ["S", "Q1", "A1", "Q2"]
    assert turns[1].prefix == tuple(ds.conversations[0].messages[:4])
    assert ds.conversations[0].messages[5].content == '{"ok": true}'
    assert all(t.conversation_id == "c" for t in turns)


# -- frames ------------------------------------------------------------------------------------


def test_frames_columns_and_rows():
    ds = load_dataset(DATA / "mixed_formats.jsonl")
    messages = ds.to_frame()
    assert list(messages.columns[:7]) == ["conversation_id", "position", "turn", "role",
                                         "content", "tool_calls", "tool_call_id"]
    assert {"category", "question_id", "task", "tag", "task_id", "reward"} <= set(messages.columns)
    assert len(messages) == sum(len(c.messages) for c in ds) == 29
    openai = messages[messages["conversation_id"] == "openai"]
    assert openai["position"].tolist() == [0, 1, 2, 3, 4, 5]
    assert openai["turn"].tolist() == [0, 1, 1, 1, 1, 2]
    assert json.loads(openai["tool_calls"].iloc[2])[0]["name"] == "weather"
    assert openai["tool_calls"].isna().sum() == 5
    assert openai["tool_call_id"].iloc[3] == "call_a"

    turns = ds.turns_frame()
    assert list(turns.columns[:5]) == ["conversation_id", "turn", "prompt", "reference",
                                      "n_prefix_messages"]
    assert len(turns) == n_turns(ds) == 14
    first = turns.iloc[0]
    assert (first["prompt"], first["reference"], first["n_prefix_messages"]) == (
        "Weather in\nParis?", "18C and sunny.", 2)
    assert turns.loc[turns["conversation_id"] == "81", "reference"].isna().all()
    assert turns["turn"].dtype == "Int64"  # the results' dtype set: missing is <NA>, not NaN
    assert turns.loc[turns["conversation_id"] == "81", "reference"].iloc[0] is pd.NA


def test_empty_frames_keep_their_columns():
    ds = from_records([], name="none")
    assert len(ds) == 0 and ds.turns() == []
    assert list(ds.to_frame().columns) == ["conversation_id", "position", "turn", "role",
                                           "content", "tool_calls", "tool_call_id"]
    assert list(ds.turns_frame().columns) == ["conversation_id", "turn", "prompt", "reference",
                                              "n_prefix_messages"]


# -- errors: one line, naming file and line ----------------------------------------------------

USER = {"role": "user", "content": "hi"}
OK = json.dumps({"messages": [USER]})

ERRORS = {
    "invalid_json": (OK + "\n" + '{"messages": [}' + "\n", 2, "invalid JSON at column 15"),
    "not_object": (OK + "\n[1, 2]\n", 2, "record is a list (expected a JSON object)"),
    "null_record": ("null\n" + OK + "\n", 1, "record is null (expected a JSON object)"),
    "no_format": (json.dumps({"prompt": "hi", "answer": "yo"}), 1,
                  "no recognizable conversation in keys {prompt, answer} (expected messages"),
    "unknown_role": (json.dumps({"messages": [USER, {"role": "narrator", "content": "x"}]}), 1,
                     "message 2: unknown role 'narrator' (expected one of: system, developer, "
                     "user"),
    "content_type": (json.dumps({"messages": [{"role": "user", "content": 5}]}), 1,
                     "message 1: user content is a number (expected a string or a list of text "
                     "parts)"),
    "image_part": (json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}), 1,
        "message 1: user content part 1 is of type 'image_url' (expected text parts)"),
    "mt_bench_turn_type": (json.dumps({"question_id": 1, "turns": ["a", None]}), 1,
                           "turns item 2: user content is null"),
    "empty_conversation": (OK + "\n\n" + json.dumps({"messages": []}), 3,
                           "empty conversation (expected at least one user message)"),
    "no_user": (json.dumps({"messages": [{"role": "system", "content": "s"},
                                         {"role": "assistant", "content": "a"}]}), 1,
                "no user message (found system, assistant; expected at least one user turn)"),
    "orphan_tool": (json.dumps({"messages": [USER, {"role": "tool", "tool_call_id": "nope",
                                                    "content": "r"}]}), 1,
                    "message 2: tool_call_id 'nope' matches no earlier assistant tool call"),
    "tool_without_call": (json.dumps({"conversations": [
        {"from": "human", "value": "hi"}, {"from": "observation", "value": "r"}]}), 1,
        "message 2: tool result without an earlier assistant tool call"),
    "bad_function_call": (json.dumps({"conversations": [
        {"from": "human", "value": "hi"}, {"from": "function_call", "value": "not json"}]}), 1,
        "message 2: function_call value is not JSON"),
    "no_role": (json.dumps({"messages": [{"content": "x"}]}), 1, "message 1 has no role"),
    "cohere_v1_message": (json.dumps({"chat_history": [], "message": 3}), 1,
                          "message is a number (expected the final user message as a string)"),
    "array_record": ("[\n" + OK + ",\n" + json.dumps({"messages": [{"role": "x"}]}) + "\n]", 3,
                     "record 2: message 1: unknown role 'x'"),
    "array_syntax": ("[\n" + OK + "\n" + OK + "\n]", 3, "expected ',' or ']' after record 1"),
    "array_unclosed": ("[\n" + OK + ",\n", 3, "the JSON array is not closed (expected ']')"),
    "array_empty": ("\n[]\n", 2, "empty JSON array"),
    "after_array": (json.dumps([json.loads(OK)]) + "\n" + OK + "\n", 2,
                    "data after the JSON array"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_one_line_with_file_and_line(tmp_path, case):
    text, line, expected = ERRORS[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:{line}: "), msg
    assert expected in msg, msg


def test_non_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    bad_line = '{"messages": [{"role": "user", "content": "café"}]}'.encode("latin-1")
    path.write_bytes((OK + "\n").encode() + bad_line + b"\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    column = bad_line.index(b"\xe9") + 1
    assert str(err.value) == (f"{path}:2: not UTF-8: byte 0xe9 at column {column} "
                              f"(file offset {len(OK) + column}; expected UTF-8 text)")

    pretty = tmp_path / "latin1.json"
    pretty.write_bytes(b'[\n  {"messages": [\n    {"role": "user", "content": "caf\xe9"}]}]\n')
    with pytest.raises(DatasetError, match=r"latin1\.json:3: not UTF-8: byte 0xe9 at column 37 "
                                           r"\(file offset 55;"):
        load_dataset(pretty)


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"empty\.jsonl: empty file \(expected JSON Lines"):
        load_dataset(path)


def test_missing_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "nope.jsonl")
    assert str(err.value) == f"{tmp_path / 'nope.jsonl'}: no such file"
    with pytest.raises(DatasetError, match="answers.jsonl: no such file"):
        load_dataset(DATA / "mixed_formats.jsonl", answers=tmp_path / "answers.jsonl")


def test_bad_answers_file(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": 81, "choices": [{"turns": [1]}]}) + "\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(DATA / "mixed_formats.jsonl", answers=answers)
    assert str(err.value).startswith(f"{answers}:1: not a FastChat answer (expected")


def test_from_records_errors_name_the_record():
    with pytest.raises(DatasetError) as err:
        from_records([{"messages": [USER]}, {"messages": "hi"}], name="nb")
    assert str(err.value) == "nb: record 2: messages is a string (expected a list of messages)"


def test_limit_must_be_positive():
    with pytest.raises(DatasetError, match="limit is 0"):
        load_dataset(DATA / "mixed_formats.jsonl", limit=0)
