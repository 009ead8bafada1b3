"""Each wire protocol owns its JSON both ways: parse_request(build_request(m)) == m on every
shared dataset (less what a protocol cannot express), tools go out in each protocol's shape,
and Gemini records and replays like the other four."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import ROOT, shared_fixture, stub_providers

from harness import replay
from harness.cassettes import read_cassette
from harness.cli import main
from harness.datasets import load_dataset
from harness.foreign import import_cassettes, inspect_cassettes
from harness.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    Tool,
    ToolMessage,
    UserMessage,
)
from harness.providers import PROTOCOLS, protocol_module
from harness.providers._common import arguments_object, arguments_text
from harness.results import COLUMNS

DATASETS = ["cohere_convfinqa_eval_chat.jsonl", "mt_bench_question.jsonl", "mtbench101.jsonl",
            "sharegpt_fastchat_dummy.json", "tau-bench_gpt-4o-airline.json"]
TAU = "tau-bench_gpt-4o-airline.json"
TAU_TOOLS = "tau-bench_airline_tools.json"


def _object_args(messages: list[Message]) -> list[Message]:
    """Tool-call arguments as the JSON object a protocol that sends objects gives back."""
    out = []
    for m in messages:
        if isinstance(m, AssistantMessage) and m.tool_calls:
            m = m.model_copy(update={"tool_calls": tuple(
                c.model_copy(update={"arguments": arguments_text(arguments_object(c))})
                for c in m.tool_calls)})
        out.append(m)
    return out


def _call_names(messages: list[Message]) -> dict[str, str]:
    return {c.id: c.name for m in messages if isinstance(m, AssistantMessage)
            for c in m.tool_calls if c.id}


def expressible(protocol: str, messages: list[Message]) -> list[Message]:
    """What `protocol` carries of `messages`, i.e. what parse_request must give back."""
    if protocol in ("openai", "cohere-v2"):  # a tool result names no tool on the wire
        return [m.model_copy(update={"name": None}) if isinstance(m, ToolMessage) else m
                for m in messages]
    names = _call_names(messages)
    if protocol == "cohere-v1":  # no call ids; a result names its call; leading systems merge
        lead = 0
        while messages[lead].role == "system":
            lead += 1
        out: list[Message] = []
        if lead:
            out.append(SystemMessage(content="\n\n".join(m.content for m in messages[:lead])))
        for m in _object_args(messages[lead:]):
            if isinstance(m, ToolMessage):
                m = ToolMessage(content=m.content,
                                name=names.get(m.tool_call_id or "") or m.name or None)
            elif isinstance(m, AssistantMessage):
                m = m.model_copy(update={"tool_calls": tuple(
                    c.model_copy(update={"id": None}) for c in m.tool_calls)})
            out.append(m)
        return out
    systems = [m for m in messages if m.role == "system"]
    rest = _object_args([m for m in messages if m.role != "system"])
    if protocol == "gemini":  # systems lead; a result names its call
        return systems + [
            m.model_copy(update={"name": m.name or names.get(m.tool_call_id or "") or None})
            if isinstance(m, ToolMessage) else m for m in rest]
    # anthropic: one system string; empty messages dropped; user and assistant alternate, so
    # a side's consecutive messages merge (tool results first on the user side)
    out = [SystemMessage(content="\n\n".join(m.content for m in systems))] if systems else []
    groups: list[list[Message]] = []
    for m in rest:
        if not (m.content or getattr(m, "tool_calls", ()) or m.role == "tool"):
            continue
        side = m.role == "assistant"
        if groups and (groups[-1][0].role == "assistant") == side:
            groups[-1].append(m)
        else:
            groups.append([m])
    for group in groups:
        if group[0].role == "assistant":
            out.append(AssistantMessage(content="".join(m.content for m in group),
                                        tool_calls=tuple(c for m in group for c in m.tool_calls)))
            continue
        out += [m.model_copy(update={"name": None}) for m in group if m.role == "tool"]
        texts = [m.content for m in group if m.role == "user" and m.content]
        if texts:
            out.append(UserMessage(content="\n".join(texts)))
    return out


def _cases(protocol: str, dataset) -> list[list[Message]]:
    """The messages to round-trip: whole conversations; for Cohere v1, which must end in a
    user message, each conversation up to its last user message."""
    out = []
    for conv in dataset:
        messages = list(conv.messages)
        if protocol == "cohere-v1":
            users = conv.user_turns()
            if not users:
                continue
            messages = messages[: users[-1] + 1]
        out.append(messages)
    return out


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("name", DATASETS)
def test_parse_request_inverts_build_request_on_every_shared_dataset(protocol, name):
    dataset = load_dataset(shared_fixture("datasets", name))
    adapter = protocol_module(protocol)
    cases = _cases(protocol, dataset)
    assert len(cases) >= len(dataset) * 0.9
    for messages in cases:
        body = json.loads(json.dumps(adapter.build_request(messages, {"model": "m"})))
        assert adapter.parse_request(body) == expressible(protocol, messages), messages[0]


def test_round_trip_keeps_what_tau_bench_holds():
    """The tau-bench conversations use every role and tool calls: the round trip is not
    vacuous (in OpenAI's and Gemini's shapes nothing at all is lost)."""
    dataset = load_dataset(shared_fixture("datasets", TAU))
    calls = sum(len(m.tool_calls) for c in dataset for m in c.messages if m.role == "assistant")
    assert calls > 1000
    for protocol in ("openai", "gemini"):
        adapter = protocol_module(protocol)
        for conv in list(dataset)[:20]:
            body = adapter.build_request(conv.messages, {"model": "m"})
            back = adapter.parse_request(json.loads(json.dumps(body)))
            assert [m.role for m in back] == [m.role for m in conv.messages]


TOOLS = (
    Tool(name="convert", description="Convert currency", parameters={
        "type": "object", "properties": {"amount": {"type": "number", "description": "how much"},
                                         "to": {"type": "string"}}, "required": ["amount"]}),
    Tool(name="ping"),
)


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_tools_go_out_in_each_protocols_shape_and_read_back(protocol):
    adapter = protocol_module(protocol)
    dataset = load_dataset(ROOT / "tests" / "data" / "datasets" / "sharegpt_tools.json")
    body = adapter.build_request(list(dataset.conversations[0].messages[:1]), {"model": "m"},
                                 TOOLS)
    shapes = {
        "openai": lambda b: [t["function"]["name"] for t in b["tools"] if t["type"] == "function"],
        "cohere-v2": lambda b: [t["function"]["name"] for t in b["tools"]],
        "anthropic": lambda b: [t["name"] for t in b["tools"] if "input_schema" in t],
        "cohere-v1": lambda b: [t["name"] for t in b["tools"] if "parameter_definitions" in t],
        "gemini": lambda b: [d["name"] for d in b["tools"][0]["functionDeclarations"]],
    }
    assert shapes[protocol](body) == ["convert", "ping"]
    back = adapter.parse_tools(json.loads(json.dumps(body)))
    if protocol == "cohere-v1":  # flat parameter_definitions: types and required survive
        assert back[0].parameters == {
            "type": "object", "required": ["amount"],
            "properties": {"amount": {"type": "number", "description": "how much"},
                           "to": {"type": "string"}}}
        assert body["tools"][0]["parameter_definitions"]["amount"] == {
            "type": "float", "required": True, "description": "how much"}
        assert [t.name for t in back] == ["convert", "ping"]
    elif protocol == "anthropic":  # a tool without parameters still needs an input schema
        assert back == (TOOLS[0], Tool(name="ping", parameters={"type": "object"}))
    else:
        assert back == TOOLS
    assert "tools" not in adapter.build_request(list(dataset.conversations[0].messages[:1]),
                                                {"model": "m"})


def test_tools_file_and_record_tools_reach_the_turns(tmp_path):
    tau = load_dataset(shared_fixture("datasets", TAU), limit=3,
                       tools=shared_fixture("datasets", TAU_TOOLS))
    turn = tau.turns()[0]
    assert len(turn.tools) == 14 and turn.tools[0].name == "book_reservation"
    assert turn.tools[0].parameters["properties"]["flights"]["type"] == "array"
    assert load_dataset(shared_fixture("datasets", TAU), limit=1).turns()[0].tools == ()
    own = load_dataset(ROOT / "tests" / "data" / "datasets" / "sharegpt_tools.json",
                       tools=shared_fixture("datasets", TAU_TOOLS))
    assert [t.name for t in own.turns()[0].tools] == ["convert"]  # a record's own tools win
    assert len(own.turns()[-1].tools) == 14  # `"tools": "[]"` names none: the file's apply


def test_a_bad_tools_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "tools.json"
    bad.write_text('[{"type": "function", "function": {"description": "no name"}}]')
    out = tmp_path / "out.jsonl"
    code = main(["replay", str(shared_fixture("datasets", TAU)), "--tools", str(bad),
                 "-p", "openai", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{bad}: item 1: not a tool schema" in err and "expected a JSON array" in err
    assert not out.exists()


# --- tools over real HTTP, in all five protocols ----------------------------------------------


def _shapes(protocol: str, body: dict) -> list[str]:
    if protocol == "openai":
        return [t["function"]["name"] for t in body["tools"]]
    if protocol == "cohere-v2":
        return [t["function"]["name"] for t in body["tools"] if t["type"] == "function"]
    if protocol == "anthropic":
        return [t["name"] for t in body["tools"] if t["input_schema"]["type"] == "object"]
    if protocol == "cohere-v1":
        return [t["name"] for t in body["tools"] if isinstance(t["parameter_definitions"], dict)]
    return [d["name"] for d in body["tools"][0]["functionDeclarations"]]


def test_tau_bench_replay_sends_tools_and_gets_tool_calls_in_all_five_protocols(stub, tmp_path):
    dataset = load_dataset(shared_fixture("datasets", TAU), limit=2,
                           tools=shared_fixture("datasets", TAU_TOOLS))
    names = [t.name for t in dataset.conversations[0].tools]
    providers = stub_providers(stub.base_url, gemini=True)
    frame = replay(dataset, providers, record_mode="all", cassette_dir=tmp_path,
                   history="reference", progress=False)
    assert (frame["status"] == "ok").all(), frame["error"].dropna().tolist()
    assert list(frame.columns) == list(COLUMNS)
    for provider in providers:
        for conv in dataset:
            path = tmp_path / TAU.removesuffix(".json") / provider.name / f"{conv.id}.yaml"
            for interaction in read_cassette(path):
                assert _shapes(provider.protocol, interaction.request_json()) == names
    assert (frame["finish_reason"] == "tool_calls").all()
    calls = [json.loads(c) for c in frame["tool_calls"]]
    # the stub calls the first tool offered, with placeholders for its required parameters
    assert {c[0]["name"] for c in calls} == {"book_reservation"}
    assert json.loads(calls[0][0]["arguments"])["user_id"] == "stub"
    assert set(frame["provider"]) == {p.name for p in providers}
    # each turn whose dataset reply is a tool call is scored; the stub never matches tau-bench
    scored = frame[frame["reference_tool_calls"].notna()]
    assert len(scored) > 0 and (scored["tool_call_match"] == False).all()  # noqa: E712
    assert frame.loc[frame["reference_tool_calls"].isna(), "tool_call_match"].isna().all()


def test_tool_call_match_is_true_when_the_reply_calls_the_reference_tool(stub, tmp_path):
    record = {"id": "t1", "tools": [{"type": "function", "function": {
                  "name": "lookup", "parameters": {"type": "object", "required": ["q"],
                                                   "properties": {"q": {"type": "string"}}}}},
                  {"type": "function", "function": {"name": "book", "parameters": {}}}],
              "messages": [
                  {"role": "user", "content": "please lookup the weather"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"id": "a", "type": "function",
                       "function": {"name": "lookup", "arguments": '{ "q":"stub" }'}}]},
                  {"role": "tool", "tool_call_id": "a", "content": "sunny"},
                  {"role": "assistant", "content": "Sunny."},
                  {"role": "user", "content": "and book it"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"id": "b", "type": "function",
                       "function": {"name": "book", "arguments": '{"when": "now"}'}}]}]}
    path = tmp_path / "tooly.jsonl"
    path.write_text(json.dumps(record) + "\n")
    out = tmp_path / "results.jsonl"
    frame = replay(load_dataset(path), stub_providers(stub.base_url, gemini=True),
                   record_mode="all", cassette_dir=tmp_path / "c", progress=False)
    by_turn = frame.groupby("turn")["tool_call_match"].apply(list).to_dict()
    assert by_turn == {1: [True] * 5, 2: [False] * 5}  # turn 2: same tool, other arguments
    from harness import compare, results
    table = compare.tool_calls(frame)
    assert list(table["tool_call_matches"]) == [1] * 5
    assert list(table["tool_call_match_rate"]) == [0.5] * 5
    results.save(frame, out)
    pd.testing.assert_frame_equal(results.load(out), frame)


# --- Gemini: record, replay, inspect, import ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_records_against_the_stub_and_replays_offline(stub, small_dataset, tmp_path,
                                                             stream):
    (provider,) = [p for p in stub_providers(stub.base_url, gemini=True)
                   if p.protocol == "gemini"]
    if stream:
        provider = provider.model_copy(update={"params": {**provider.params, "stream": True}})
    recorded = replay(small_dataset, [provider], record_mode="all", cassette_dir=tmp_path,
                      history="self", progress=False)
    assert (recorded["status"] == "ok").all()
    paths = [r["path"] for r in stub.requests]
    suffix = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
    assert paths == [f"/v1beta/models/stub-gemini{suffix}"] * 7
    bodies = [r["body"] for r in stub.requests]
    (c1_turn1, c1_turn2) = [b for b in bodies if "systemInstruction" in b]
    assert c1_turn1["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert c1_turn1["generationConfig"] == {"maxOutputTokens": 40}
    assert "model" not in c1_turn1
    # self history: the stub's own earlier reply goes back with role `model`
    assert [c["role"] for c in c1_turn2["contents"]] == ["user", "model", "user"]
    assert c1_turn2["contents"][1]["parts"][0]["text"].startswith("stub-gemini reply to turn 1")
    c2 = recorded[recorded["conversation_id"] == "c2"]
    assert list(c2["finish_reason"]) == ["length", "stop"]  # maxOutputTokens cut the story
    assert list(c2["output_tokens"]) == [40, c2["output_tokens"].iloc[1]]
    assert (recorded["total_tokens"] == recorded["input_tokens"] + recorded["output_tokens"]).all()
    assert recorded["response"].str.startswith("stub-gemini reply to turn").all()
    assert recorded["model"].eq("stub-gemini").all() and recorded["response_id"].notna().all()

    stub.__exit__()
    offline = replay(small_dataset, [provider], cassette_dir=tmp_path, history="self",
                     progress=False)
    pd.testing.assert_frame_equal(recorded, offline)


def test_gemini_key_goes_in_x_goog_api_key_and_is_scrubbed(tmp_path, monkeypatch, small_dataset):
    from harness.stub_server import StubServer
    monkeypatch.setenv("STUB_GEMINI_KEY", "sk-gemini-secret-123")
    with StubServer(api_key="sk-gemini-secret-123") as server:
        (provider,) = [p for p in stub_providers(server.base_url, "STUB_GEMINI_KEY", gemini=True)
                       if p.protocol == "gemini"]
        frame = replay(small_dataset, [provider], record_mode="all", cassette_dir=tmp_path,
                       progress=False)
        assert server.requests[0]["headers"]["x-goog-api-key"] == "sk-gemini-secret-123"
    assert (frame["status"] == "ok").all()
    for path in tmp_path.rglob("*.yaml"):
        assert "sk-gemini-secret-123" not in path.read_text()


def test_inspect_and_import_read_the_shared_gemini_fixture_through_the_gemini_module(tmp_path):
    path = shared_fixture("cassettes", "gemini", "mirascope-gemini_max_tokens.yaml")
    (row,) = inspect_cassettes(path).to_dict("records")
    assert (row["protocol"], row["model"], row["messages"]) == ("gemini", "gemini-2.5-flash", 1)
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (9, 48, 57)
    assert row["reasoning_tokens"] == 38 and json.loads(row["usage_raw"])["thoughtsTokenCount"] == 38
    dataset, frame = import_cassettes(path, tmp_path / "g.jsonl", tmp_path / "g.parquet")
    (conv,) = dataset
    assert conv.metadata["protocol"] == "gemini" and conv.messages[0].role == "user"
    (result,) = frame.to_dict("records")
    assert (result["provider"], result["finish_reason"], result["output_tokens"],
            result["reasoning_tokens"]) == ("gemini", "length", 48, 38)
    assert result["model"] == "gemini-2.5-flash"


def test_gemini_preset_and_url():
    from harness.providers import PRESETS
    gemini = PRESETS["gemini"]
    assert gemini.url == ("https://generativelanguage.googleapis.com/v1beta/models/"
                          "gemini-2.5-flash:generateContent")
    assert gemini.request_headers("k") == {"content-type": "application/json",
                                           "x-goog-api-key": "k"}
    streaming = gemini.model_copy(update={"params": {"stream": True}})
    assert streaming.url.endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert "stream" not in json.dumps(streaming.build_body([]))
    keyed = streaming.model_copy(update={"base_url": gemini.base_url + "?key=k"})
    assert keyed.url.endswith(":streamGenerateContent?alt=sse&key=k")  # one query, both kept



@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_parse_params_inverts_build_request(protocol):
    adapter = protocol_module(protocol)
    params = {"max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n", "END"],
              "seed": 42}
    body = adapter.build_request([UserMessage(content="hi")], {"model": "m", **params})
    expected = dict(params)
    if protocol == "anthropic":  # Anthropic has no seed
        del expected["seed"]
    assert adapter.parse_params(json.loads(json.dumps(body))) == expected
