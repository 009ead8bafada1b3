"""Cassettes other tools recorded: `inspect_cassettes`, `import_cassettes` and their commands.

The expected values were read by hand from the files under ../shared/fixtures/cassettes
(decoded bodies: gzip/base64, SSE streams, pydantic-ai `parsed_body`); the small cassettes in
tests/data/foreign/ are hand-written for the cases those files do not show.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from harness import results
from harness.cassettes import CassetteError, read_cassette
from harness.cli import add_foreign_commands
from harness.datasets import conversation_turns, load_dataset
from harness.foreign import (
    COLUMNS,
    detect,
    import_cassettes,
    inspect_cassettes,
    parse_request,
    plan_import,
)
from harness.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage
from harness.providers import protocol_module

CASSETTES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cassettes"
DATA = Path(__file__).resolve().parent / "data" / "foreign"
NA = None


def fixture(name: str) -> Path:
    path = CASSETTES / name
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/fixtures is absent)")
    return path


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    if not CASSETTES.is_dir():
        pytest.skip(f"{CASSETTES} is not here (../shared/fixtures is absent)")
    return inspect_cassettes(CASSETTES)


def cell(value):
    return None if value is pd.NA or value is None else value


# --- inspect: every shared fixture, read by hand ---------------------------------------------------

# file: (provider, protocol, request model, streamed, rows); one row per interaction:
# (status, finish_reason, raw_finish_reason, input, output, total, cached, text start, error start)
EXPECTED: dict[str, tuple[str, str, str | None, bool, list[tuple]]] = {
    "anthropic/mirascope-anthropic_max_tokens.yaml": ("anthropic", "anthropic", "claude-sonnet-4-0", False, [
        (200, "length", "max_tokens", 15, 50, 65, 0,
         "Here are all 50 U.S. states in alphabetical order:", NA)]),
    "anthropic/mirascope-anthropic_max_tokens_stream.yaml": (
        "anthropic", "anthropic", "claude-sonnet-4-0", True, [
        (200, "length", "max_tokens", 15, 50, 65, 0,
         "Here are all 50 U.S. states in alphabetical order:", NA)]),
    "anthropic/mirascope-anthropic_model_not_found_404.yaml": (
        "anthropic", "anthropic", "this-model-does-not-exist-12345", False, [
            (404, "error", NA, NA, NA, NA, NA, "",
             "HTTP 404: not_found_error: model: this-model-does-not-exist-12345")] * 2),
    "anthropic/pai-anthropic_parallel_tool_calls_parsed_body.yaml": (
        "anthropic", "anthropic", "claude-haiku-4-5", False, [
        (200, "tool_calls", "tool_use", 423, 202, 625, 0, "I'll help you find out who is the youngest", NA),
        (200, "stop", "end_turn", 771, 77, 848, 0, "Based on the retrieved information, we can see", NA)]),
    "cohere_v1/langtrace-cohere_v1_chat_history.yaml": ("cohere-v1", "cohere-v1", "command", False, [
        (200, "stop", "COMPLETE", 49, 69, 118, NA,
         "Argh, many years ago, a bold explorer named Isaac Newton", NA)]),
    "cohere_v1/lc-cohere_v1_batch_api_cohere_ai.yaml": ("cohere-v1", "cohere-v1", None, False, [
        (200, "stop", "COMPLETE", 71, 76, 147, NA, "I see that you are referencing the popular animated", NA),
        (200, "stop", "COMPLETE", 70, 83, 153, NA, "You seem to be referencing the popular animated", NA)]),
    "cohere_v1/lc-cohere_v1_invoke.yaml": ("cohere-v1", "cohere-v1", None, False, [
        (200, "stop", "COMPLETE", 70, 33, 103, NA, "You're Pickle Rick! Wow, it's not every day", NA)]),
    "cohere_v1/oll-cohere_v1_chat_deprecation_warning.yaml": ("cohere-v1", "cohere-v1", "command", False, [
        (200, "stop", "COMPLETE", 69, 81, 150, NA, "Arrrr, matey! Shiver me timbers", NA)]),
    "cohere_v2/lc-cohere_invoke.yaml": ("cohere-v2", "cohere-v2", "command-r", False, [
        (200, "stop", "COMPLETE", 70, 28, 98, NA,
         "Hi there! You're Pickle Rick? That's a fun nickname!", NA)]),
    "cohere_v2/lc-cohere_reasoning_tool_call_gzip.yaml": (
        "cohere-v2", "cohere-v2", "command-a-reasoning-08-2025", False, [
            (200, "tool_calls", "TOOL_CALL", 1494, 330, 1824, 1008, "", NA)]),
    "cohere_v2/lc-cohere_sql_agent_stream_finish_error.yaml": (
        "cohere-v2", "cohere-v2", "command-a-03-2025", True, [
        (200, "error", "ERROR", NA, NA, NA, NA, "I will first inspect the tables in the database. Once",
         "INVALID_TOOL_GENERATION: your request resulted in an invalid tool generation"),
        (200, "error", "ERROR", NA, NA, NA, NA, "I will first inspect the tables in the database. I will",
         "INVALID_TOOL_GENERATION: your request resulted in an invalid tool generation")]),
    "cohere_v2/lc-cohere_stream_sse.yaml": ("cohere-v2", "cohere-v2", "command-r", True, [
        (200, "stop", "COMPLETE", 70, 69, 139, NA,
         "Hi there! You're Pickle Rick? That's a fun nickname!", NA)]),
    "cohere_v2/lc-cohere_tool_history_magic_function.yaml": ("cohere-v2", "cohere-v2", "command-r", False, [
        (200, "stop", "COMPLETE", 939, 57, 996, NA, "The value of magic_function(3) is 5.", NA)]),
    "cohere_v2/pai-cohere_stop_sequence_parsed_body.yaml": (
        "cohere-v2", "cohere-v2", "command-r-plus", False, [
        (200, "stop", "STOP_SEQUENCE", 91, 11, 102, NA, "The capital of France is a city known as", NA)]),
    "gemini/mirascope-gemini_max_tokens.yaml": ("gemini", "gemini", "gemini-2.5-flash", False, [
        # output = 10 candidates + 38 thoughts (thinking counts as output); 9 + 48 = 57
        (200, "length", "MAX_TOKENS", 9, 48, 57, NA, "Here is a list of all 50 U", NA)]),
    "groq/pai-groq_tool_use_failed_400_parsed_body.yaml": ("groq", "openai", "openai/gpt-oss-120b", False, [
        (400, "error", NA, NA, NA, NA, NA, "", "HTTP 400: tool_use_failed: Tool call validation failed"),
        (200, "tool_calls", "tool_calls", 301, 52, 353, NA, "", NA),
        (200, "stop", "stop", 336, 96, 432, 256, "The first call failed due to missing and extra", NA)]),
    "mistral/oll-mistral_stream_uri_fragment.yaml": ("mistral", "openai", "mistral-tiny", True, [
        (200, "stop", "stop", 11, 80, 91, NA,
         "Here's a light-hearted joke that combines OpenTelemetry", NA)]),
    "mistral/pai-mistral_history_prompt_cache_parsed_body.yaml": (
        "mistral", "openai", "mistral-large-latest", False, [
        (200, "stop", "stop", 253, 5, 258, 0, "cache probe one.", NA),
        (200, "stop", "stop", 268, 5, 273, 224, "cache probe two.", NA)]),
    "openai/mirascope-openai_auth_error_401.yaml": ("openai", "openai", "gpt-4o", False, [
        (401, "error", NA, NA, NA, NA, NA, "",
         "HTTP 401: invalid_api_key: Incorrect API key provided: invalid-*****2345.")]),
    "openai/mirascope-openai_max_tokens_length.yaml": ("openai", "openai", "gpt-4o", False, [
        (200, "length", "length", 14, 50, 64, 0, "Certainly! Here is a list of all 50 U.S. states:", NA)]),
    "openai/mirascope-openai_max_tokens_length_stream.yaml": ("openai", "openai", "gpt-4o", True, [
        (200, "length", "length", 14, 50, 64, 0, "Here is a list of all 50 U.S. states:\n\n1. Alabama", NA)]),
    "openai/mirascope-openai_tool_calls_multi_turn.yaml": ("openai", "openai", "gpt-4o", False, [
        (200, "tool_calls", "tool_calls", 75, 53, 128, 0, "", NA),
        (200, "stop", "stop", 149, 32, 181, 0, "The secrets associated with the passwords are", NA),
        (200, "tool_calls", "tool_calls", 75, 53, 128, 0, "", NA),
        (200, "stop", "stop", 149, 36, 185, 0, "Here are the secrets associated with the passwords you", NA),
        (200, "tool_calls", "tool_calls", 75, 53, 128, 0, "", NA),
        (200, "stop", "stop", 149, 31, 180, 0, "Here are the secrets associated with the passwords:", NA)]),
    "openai/pai-openai_max_completion_tokens_parsed_body.yaml": ("openai", "openai", "gpt-4o-mini", False, [
        (200, "stop", "stop", 8, 9, 17, 0, "Hello! How can I assist you today?", NA)]),
    "openrouter/mirascope-openrouter_chat_gzip.yaml": ("openrouter", "openai", "openai/gpt-4o", False, [
        (200, "stop", "stop", 12, 2, 14, 0, "Hello!", NA)]),
    "openrouter/pai-openrouter_429_parsed_body.yaml": (
        "openrouter", "openai", "google/gemini-2.0-flash-exp:free", False, [
            (429, "error", NA, NA, NA, NA, NA, "",
             "HTTP 429: Provider returned error (google/gemini-2.0-flash-exp:free is temporarily "
             "rate-limited upstream.")] * 3),
    "together/oll-together_chat_finish_eos.yaml": (
        "together", "openai", "mistralai/Mixtral-8x7B-Instruct-v0.1", False, [
            (200, "stop", "eos", 18, 35, 53, NA,
             " Why don't we ever hear secrets at a OpenTelemetry convention?", NA)]),
    "together/pai-hf_router_together_length_parsed_body.yaml": (
        "together", "openai", "deepseek-ai/DeepSeek-R1", False, [
        (200, "length", "length", 4, 100, 104, 0, '<think>\nHmm, the user just said "hello".', NA)]),
}


def rows_of(table: pd.DataFrame, name: str) -> pd.DataFrame:
    return table[table["file"] == str(CASSETTES / name)].reset_index(drop=True)


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=[n.split("/")[1] for n in sorted(EXPECTED)])
def test_inspect_fixture_read_by_hand(table, name):
    fixture(name)
    provider, protocol, model, streamed, expected = EXPECTED[name]
    rows = rows_of(table, name)
    assert list(rows["index"]) == list(range(len(expected)))
    for (_, row), want in zip(rows.iterrows(), expected, strict=True):
        status, finish, raw, n_in, n_out, total, cached, text, error = want
        assert (row["provider"], row["protocol"], cell(row["model"]), bool(row["streamed"])) == (
            provider, protocol, model, streamed)
        assert row["method"] == "POST"
        assert (row["status"], row["finish_reason"], cell(row["raw_finish_reason"])) == (
            status, finish, raw)
        assert [cell(row[c]) for c in ("input_tokens", "output_tokens", "total_tokens",
                                       "cached_tokens")] == [n_in, n_out, total, cached]
        assert (cell(row["text"]) or "").startswith(text[:60])
        assert len(cell(row["text"]) or "") <= 60
        if error is None:
            assert cell(row["error"]) is None
        else:
            assert row["error"].startswith(error) and "\n" not in row["error"]


def test_every_fixture_file_gets_one_row_per_interaction(table):
    files = sorted(CASSETTES.rglob("*.yaml"))
    assert files, "no cassettes under the shared fixtures"
    assert list(table.columns) == list(COLUMNS)
    assert sorted(set(table["file"])) == [str(f) for f in files]
    for path in files:
        rows = table[table["file"] == str(path)]
        assert len(rows) == len(read_cassette(path)), path.name
    assert table["protocol"].notna().all()  # every shared fixture is a chat call
    assert not table["error"].fillna("").str.startswith("request:").any()  # every request read
    failed = table["finish_reason"] == "error"
    assert (table["error"].notna() == failed).all()
    assert table["messages"].notna().all() and (table["messages"] >= 1).all()
    assert str(table["input_tokens"].dtype) == "Int64" and str(table["streamed"].dtype) == "boolean"


def test_uri_oddities_and_layouts(table):
    """`?beta=true` and `#stream` stay out of the path; Title-Case headers and parsed_body read."""
    beta = rows_of(table, "anthropic/pai-anthropic_parallel_tool_calls_parsed_body.yaml")
    raw = read_cassette(fixture("anthropic/pai-anthropic_parallel_tool_calls_parsed_body.yaml"))
    assert raw[0].uri == "https://api.anthropic.com/v1/messages?beta=true"
    assert list(beta["path"]) == ["/v1/messages"] * 2 and list(beta["host"]) == ["api.anthropic.com"] * 2
    assert list(beta["messages"]) == [2, 7]  # system + user; then + assistant + 4 tool results
    assert beta.loc[0, "tool_calls"] == ", ".join(["retrieve_entity_info"] * 4)
    assert "parsed_body" in fixture(
        "anthropic/pai-anthropic_parallel_tool_calls_parsed_body.yaml").read_text()

    mistral = rows_of(table, "mistral/oll-mistral_stream_uri_fragment.yaml").iloc[0]
    assert read_cassette(fixture("mistral/oll-mistral_stream_uri_fragment.yaml"))[0].uri.endswith(
        "#stream")
    assert (mistral["host"], mistral["path"]) == ("api.mistral.ai", "/v1/chat/completions")
    assert mistral["response_model"] == "mistral-tiny"

    gz = fixture("openai/mirascope-openai_max_tokens_length.yaml")
    text = gz.read_text()
    assert "Content-Encoding:" in text and "!!binary" in text  # Title-Case, base64 gzip bytes
    row = rows_of(table, "openai/mirascope-openai_max_tokens_length.yaml").iloc[0]
    assert row["response_model"] == "gpt-4o-2024-08-06"

    hf = rows_of(table, "together/pai-hf_router_together_length_parsed_body.yaml").iloc[0]
    assert (hf["host"], hf["path"]) == ("router.huggingface.co", "/together/v1/chat/completions")
    v1_old_host = rows_of(table, "cohere_v1/lc-cohere_v1_batch_api_cohere_ai.yaml")
    assert set(v1_old_host["host"]) == {"api.cohere.ai"}


# --- inspect: hand-written cassettes -----------------------------------------------------------


def test_inspect_mixed_hosts_non_chat_local_gateway_gemini_stream():
    rows = inspect_cassettes(DATA / "mixed_hosts.json")
    assert len(rows) == 6
    models = rows.iloc[0]  # GET /v1/models: what is known, no reply columns
    assert (models["method"], models["provider"], models["path"], models["status"]) == (
        "GET", "openai", "/v1/models", 200)
    reply_columns = ["protocol", "messages", "finish_reason", "raw_finish_reason", "input_tokens",
                     "output_tokens", "total_tokens", "cached_tokens", "text", "tool_calls",
                     "response_model", "error"]
    assert all(cell(models[c]) is None for c in reply_columns)
    assert not models["streamed"]

    local = rows.iloc[1]
    assert (local["provider"], local["protocol"], local["model"], local["finish_reason"],
            local["output_tokens"], local["text"]) == (
        "local", "openai", "smollm2", "length", 8, "Hello there, how can")

    gateway = rows.iloc[2]  # base64 gzip body, Title-Case Content-Encoding
    assert (gateway["provider"], gateway["protocol"], gateway["finish_reason"],
            gateway["raw_finish_reason"], gateway["total_tokens"], gateway["text"]) == (
        "assemblyai", "openai", "stop", "end_turn", 16, "Bonjour !")

    gemini = rows.iloc[3]  # streamGenerateContent?alt=sse, model from the URL
    assert (gemini["provider"], gemini["protocol"], gemini["model"], bool(gemini["streamed"])) == (
        "gemini", "gemini", "gemini-2.0-flash", True)
    assert (gemini["path"], gemini["messages"], gemini["text"], gemini["finish_reason"],
            gemini["raw_finish_reason"]) == (
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent", 4, "Twelve inches.", "stop", "STOP")
    assert [gemini[c] for c in ("input_tokens", "output_tokens", "total_tokens", "cached_tokens")] \
        == [21, 3, 24, 8]

    unknown = rows.iloc[4]  # another host, no chat path: a row, no reply, no error
    assert (unknown["provider"], cell(unknown["protocol"]), unknown["model"],
            cell(unknown["error"])) == ("example.internal", None, "llama3", None)

    overloaded = rows.iloc[5]
    assert (overloaded["provider"], overloaded["protocol"], overloaded["status"],
            overloaded["finish_reason"], overloaded["error"]) == (
        "local", "anthropic", 529, "error", "HTTP 529: overloaded_error: Overloaded")


def test_inspect_cohere_v1_ndjson_stream():
    rows = inspect_cassettes(str(DATA / "cohere_v1_ndjson_stream.yaml"))
    assert list(rows["streamed"]) == [True, True]
    assert list(rows["provider"]) == ["cohere-v1"] * 2
    assert list(rows["text"]) == ["Arr, Sir Isaac Newton, matey!", "In 1687, ye landlubber."]
    assert list(rows["finish_reason"]) == ["stop", "length"]
    assert list(rows["raw_finish_reason"]) == ["COMPLETE", "MAX_TOKENS"]
    assert list(rows["input_tokens"]) == [74, 95] and list(rows["output_tokens"]) == [9, 8]
    assert list(rows["messages"]) == [2, 4]  # preamble + message; + chat_history of two


def test_one_odd_interaction_never_stops_the_table():
    rows = inspect_cassettes([DATA / "broken_interaction.yaml"])
    assert len(rows) == 3
    assert (rows.loc[0, "finish_reason"], rows.loc[0, "text"]) == ("stop", "1")
    assert cell(rows.loc[1, "method"]) is None and "response" in rows.loc[1, "error"]
    assert rows.loc[2, "finish_reason"] == "error"
    assert rows.loc[2, "error"] == "invalid JSON response: <html>502 Bad Gateway</html>"


def test_an_unreadable_request_is_named_and_the_reply_still_read(tmp_path):
    path = tmp_path / "form.yaml"
    path.write_text(json.dumps({"version": 1, "interactions": [{
        "request": {"method": "POST", "uri": "https://api.openai.com/v1/chat/completions",
                    "headers": {}, "body": "model=gpt-4o&prompt=hi"},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {
            "string": '{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hey"},'
                      ' "finish_reason": "stop"}]}'}}}]}))
    row = inspect_cassettes(path).iloc[0]
    assert (row["text"], row["finish_reason"], cell(row["messages"])) == ("hey", "stop", None)
    assert row["error"] == "request: the request body is not a JSON object"
    assert plan_import(path).skipped == [
        f"{path}: interaction 0: cannot read the request: the request body is not a JSON object"]


@pytest.mark.parametrize(("path", "message"), [
    (DATA / "not_a_cassette.yaml", "not a vcrpy cassette"),
    (DATA / "missing.yaml", "cannot read"),
])
def test_a_file_that_is_not_a_cassette_raises_one_line(path, message):
    with pytest.raises(CassetteError, match=message) as info:
        inspect_cassettes([path])
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_folder_without_cassettes_raises(tmp_path):
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(CassetteError, match="no cassettes"):
        inspect_cassettes(tmp_path)


@pytest.mark.parametrize(("uri", "provider", "protocol"), [
    ("https://api.openai.com/v1/chat/completions", "openai", "openai"),
    ("https://api.openai.com/v1/models", "openai", None),
    ("https://api.together.xyz/v1/chat/completions", "together", "openai"),
    ("https://router.huggingface.co/together/v1/chat/completions", "together", "openai"),
    ("https://router.huggingface.co/v1/chat/completions", "huggingface", "openai"),
    ("https://api.groq.com/openai/v1/chat/completions", "groq", "openai"),
    ("https://api.mistral.ai/v1/chat/completions#stream", "mistral", "openai"),
    ("https://openrouter.ai/api/v1/chat/completions", "openrouter", "openai"),
    ("https://api.cohere.com/v1/chat", "cohere-v1", "cohere-v1"),
    ("https://api.cohere.ai/v1/chat", "cohere-v1", "cohere-v1"),
    ("https://api.cohere.com/v2/chat", "cohere-v2", "cohere-v2"),
    ("https://api.cohere.com/v1/models?default_only=true&endpoint=chat", "cohere", None),
    ("https://api.anthropic.com/v1/messages?beta=true", "anthropic", "anthropic"),
    ("https://llm-gateway.assemblyai.com/v1/chat/completions", "assemblyai", "openai"),
    ("http://127.0.0.1:8099/v2/chat", "local", "cohere-v2"),
    ("http://localhost:8080/v1/chat/completions", "local", "openai"),
    ("http://127.0.0.1:8099/v1/messages", "local", "anthropic"),
    ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
     "gemini", "gemini"),
    ("https://vllm.example.org/v1/chat/completions", "vllm.example.org", "openai"),
])
def test_detect(uri, provider, protocol):
    assert detect(uri) == (provider, protocol)


# --- request bodies -> messages ------------------------------------------------------------------

CONVERSATION = [
    SystemMessage(content="Be brief."), UserMessage(content="Weather in Paris?"),
    AssistantMessage(content="Let me check.", tool_calls=(
        ToolCall(id="c1", name="weather", arguments='{"city": "Paris"}'),)),
    ToolMessage(content="sunny", tool_call_id="c1", name="weather"),
    AssistantMessage(content="Sunny."), UserMessage(content="Thanks!"),
]


@pytest.mark.parametrize("protocol", ["openai", "cohere-v2", "cohere-v1", "anthropic"])
def test_parse_request_inverts_build_request(protocol):
    """What each protocol carries comes back; only what its wire format drops is lost."""
    body = protocol_module(protocol).build_request(CONVERSATION, {"model": "m"})
    expected = list(CONVERSATION)
    expected[3] = ToolMessage(content="sunny", tool_call_id="c1")  # no tool name on the wire
    if protocol == "cohere-v1":  # v1 has no call ids, but names the call in its result
        expected[2] = AssistantMessage(content="Let me check.", tool_calls=(
            ToolCall(name="weather", arguments='{"city": "Paris"}'),))
        expected[3] = ToolMessage(content="sunny", name="weather")
    assert parse_request(protocol, json.loads(json.dumps(body))) == expected


def test_parse_request_content_parts_and_shapes():
    openai = parse_request("openai", {"messages": [
        {"role": "developer", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "done"}]})
    assert openai == [SystemMessage(content="sys"), UserMessage(content="look\n[image_url]"),
                      AssistantMessage(tool_calls=(ToolCall(name="f"),)),
                      ToolMessage(content="done", name="f")]
    anthropic = parse_request("anthropic", {
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]},
            {"type": "text", "text": "and?"}]}]})
    assert anthropic == [SystemMessage(content="sys"), ToolMessage(content="42", tool_call_id="t1"),
                         UserMessage(content="and?")]
    cohere_v2 = parse_request("cohere-v2", {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_plan": "I will call f.", "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "x",
         "content": [{"type": "document", "document": {"data": {"output": "5"}}}]}]})
    assert cohere_v2[1] == AssistantMessage(content="I will call f.",
                                            tool_calls=(ToolCall(id="x", name="f"),))
    assert cohere_v2[2] == ToolMessage(content='{"output": "5"}', tool_call_id="x")
    with pytest.raises(ValueError, match="no 'messages' list"):
        parse_request("openai", {"prompt": "hi"})
    with pytest.raises(ValueError, match="unknown protocol"):
        parse_request("ollama", {})


# --- import ----------------------------------------------------------------------------------------


def imported(tmp_path: Path, *paths: Path | str, baseline: str = "baseline.parquet"):
    dataset_out, baseline_out = tmp_path / "imported.jsonl", tmp_path / baseline
    dataset, frame = import_cassettes(list(paths), dataset_out, baseline_out)
    again = load_dataset(dataset_out)
    assert [c.model_dump() for c in again] == [c.model_dump() for c in dataset]
    for line in dataset_out.read_text(encoding="utf-8").splitlines():
        assert set(json.loads(line)) <= {"id", "messages", "metadata", "tools"}
    saved = results.load(baseline_out)
    assert list(saved.columns) == list(results.COLUMNS)
    pd.testing.assert_frame_equal(saved, frame)
    return dataset, frame


def test_import_openai_tool_calls_multi_turn(tmp_path):
    dataset, frame = imported(tmp_path, fixture("openai/mirascope-openai_tool_calls_multi_turn.yaml"))
    # three recording runs of the same exchange: 2 parallel tool calls, 2 results, an answer
    assert [c.id for c in dataset] == [f"mirascope-openai_tool_calls_multi_turn-{i}" for i in (0, 2, 4)]
    for conv, (first, second) in zip(dataset, [(0, 1), (2, 3), (4, 5)], strict=True):
        assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "tool",
                                                   "assistant"]
        assert len(conv.user_turns()) == 1
        calls = conv.messages[2].tool_calls
        assert [c.name for c in calls] == ["secret_retrieval_tool"] * 2
        assert [m.tool_call_id for m in conv.messages[3:5]] == [c.id for c in calls]
        assert [m.content for m in conv.messages[3:5]] == ["Welcome to Moria!", "Life before Death"]
        meta = conv.metadata
        assert meta["source"].endswith("mirascope-openai_tool_calls_multi_turn.yaml")
        assert (meta["interactions"], meta["provider"], meta["model"]) == (
            [first, second], "openai", "gpt-4o")
        assert "tools" not in meta  # the full schemas are the record's own `tools`
        (tool,) = conv.tools
        assert tool.name == "secret_retrieval_tool" and tool.parameters["type"] == "object"
        (step,) = meta["tool_steps"]  # the answer after the tool results: no user turn of its own
        assert (step["interaction"], step["turn"], step["after"], step["finish_reason"],
                step["input_tokens"]) == (second, 1, "tool", "stop", 149)
    assert [s["output_tokens"] for c in dataset for s in c.metadata["tool_steps"]] == [32, 36, 31]
    assert dataset.turns()[0].reference.startswith("The secrets associated with the passwords")
    assert len(frame) == 3
    assert list(frame["turn"]) == [1, 1, 1] and set(frame["provider"]) == {"openai"}
    assert list(frame["finish_reason"]) == ["tool_calls"] * 3
    assert list(frame["input_tokens"]) == [75] * 3 and list(frame["output_tokens"]) == [53] * 3
    assert list(frame["cached_input_tokens"]) == [0] * 3
    assert list(frame["model"]) == ["gpt-4o-2024-08-06"] * 3
    assert list(frame["http_status"]) == [200] * 3 and list(frame["status"]) == ["ok"] * 3
    assert json.loads(frame.loc[0, "tool_calls"])[0]["name"] == "secret_retrieval_tool"
    assert frame.loc[0, "prompt"].startswith("Please retrieve the secrets")


def test_import_cohere_v1_chat_history(tmp_path):
    dataset, frame = imported(tmp_path, fixture("cohere_v1/langtrace-cohere_v1_chat_history.yaml"))
    (conv,) = dataset
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert conv.messages[0].content == "answer like a pirate"
    assert conv.messages[2].content.startswith("The man who is widely credited")
    assert conv.metadata["params"] == {"temperature": 0.1}
    turns = dataset.turns()
    assert [t.prompt for t in turns] == ["Who discovered gravity?",
                                         "Tell me a story in 3 sentences or less?"]
    # one recorded reply: the one to turn 2 (turn 1's reply came from chat_history)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["turn"], row["provider"], row["model"], row["finish_reason"],
            row["raw_finish_reason"]) == (2, "cohere-v1", "command", "stop", "COMPLETE")
    assert [row[c] for c in ("input_tokens", "output_tokens", "total_tokens",
                             "billed_input_tokens", "billed_output_tokens")] == [49, 69, 118, 31, 69]
    assert row["response"] == row["reference"]
    assert row["response"].startswith("Argh, many years ago")


def test_import_anthropic_parallel_tool_calls(tmp_path):
    dataset, frame = imported(
        tmp_path, fixture("anthropic/pai-anthropic_parallel_tool_calls_parsed_body.yaml"),
        baseline="baseline.csv")
    (conv,) = dataset
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", *["tool"] * 4,
                                               "assistant"]
    calls = conv.messages[2].tool_calls
    assert [json.loads(c.arguments)["name"] for c in calls] == ["Alice", "Bob", "Charlie", "Daisy"]
    assert [m.tool_call_id for m in conv.messages[3:7]] == [c.id for c in calls]
    assert conv.messages[-1].content.startswith("Based on the retrieved information")
    assert conv.metadata["interactions"] == [0, 1]
    assert conv.metadata["params"] == {"max_tokens": 4096}
    assert [(s["interaction"], s["finish_reason"], s["raw_finish_reason"], s["input_tokens"],
             s["output_tokens"]) for s in conv.metadata["tool_steps"]] == [
        (1, "stop", "end_turn", 771, 77)]
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["turn"], row["finish_reason"], row["raw_finish_reason"], row["input_tokens"],
            row["output_tokens"], row["model"]) == (
        1, "tool_calls", "tool_use", 423, 202, "claude-haiku-4-5-20251001")
    assert len(json.loads(row["tool_calls"])) == 4


def test_import_mistral_two_turns_and_groq_retry(tmp_path):
    dataset, frame = imported(
        tmp_path, fixture("mistral/pai-mistral_history_prompt_cache_parsed_body.yaml"),
        fixture("groq/pai-groq_tool_use_failed_400_parsed_body.yaml"))
    mistral, groq = dataset
    assert len(mistral.user_turns()) == 2 and mistral.metadata["interactions"] == [0, 1]
    rows = frame[frame["conversation_id"] == mistral.id]
    assert list(rows["turn"]) == [1, 2] and list(rows["response"]) == ["cache probe one.",
                                                                       "cache probe two."]
    assert list(rows["cached_input_tokens"]) == [0, 224]
    # groq: turn 1 failed with HTTP 400, then two tool steps; one user turn in all
    assert [m.role for m in groq.messages] == ["system", "user", "assistant", "tool", "assistant",
                                               "tool", "assistant"]
    (row,) = frame[frame["conversation_id"] == groq.id].itertuples()
    assert (row.turn, row.status, row.http_status, row.finish_reason) == (1, "error", 400, "error")
    assert row.error.startswith("HTTP 400: tool_use_failed")
    assert [(s["interaction"], s["finish_reason"]) for s in groq.metadata["tool_steps"]] == [
        (1, "tool_calls"), (2, "stop")]


def test_import_every_fixture_accounts_for_every_reply(tmp_path):
    if not CASSETTES.is_dir():
        pytest.skip(f"{CASSETTES} is not here (../shared/fixtures is absent)")
    dataset, frame = imported(tmp_path, CASSETTES)
    chat = inspect_cassettes(CASSETTES)
    steps = sum(len(c.metadata.get("tool_steps", [])) for c in dataset)
    assert len(frame) + steps == len(chat)  # each recorded reply: a baseline row or a tool step
    assert not frame.duplicated(["conversation_id", "turn", "provider"]).any()
    assert set(frame["conversation_id"]) <= {c.id for c in dataset}
    assert len({c.metadata["source"] for c in dataset}) == len(list(CASSETTES.rglob("*.yaml")))
    by_file = frame.assign(file=[cid.rsplit("-", 1)[0] for cid in frame["conversation_id"]])
    errors = by_file[by_file["status"] == "error"].groupby("file")["http_status"].apply(list)
    assert errors.to_dict() == {
        "lc-cohere_sql_agent_stream_finish_error": [200, 200],
        "mirascope-anthropic_model_not_found_404": [404, 404],
        "mirascope-openai_auth_error_401": [401],
        "pai-groq_tool_use_failed_400_parsed_body": [400],
        "pai-openrouter_429_parsed_body": [429, 429, 429],
    }


def test_import_merges_growing_requests_and_keeps_independent_ones_apart(tmp_path):
    dataset, frame = imported(tmp_path, DATA / "openai_interleaved.yaml",
                              DATA / "cohere_v1_ndjson_stream.yaml", baseline="b.jsonl")
    assert [(c.id, len(c.user_turns()), c.metadata["interactions"]) for c in dataset] == [
        ("openai_interleaved-0", 3, [0, 2, 3]),
        ("openai_interleaved-1", 1, [1]),
        ("cohere_v1_ndjson_stream-0", 2, [0, 1]),
    ]
    assert [m.content for m in dataset.conversations[0].messages] == [
        "Be brief.", "Capital of France?", "Paris.", "Its river?", "The Seine.", "Length?",
        "About 777 km"]
    assert list(zip(frame["conversation_id"], frame["turn"], frame["response"],
                    frame["finish_reason"], frame["input_tokens"], strict=True)) == [
        ("openai_interleaved-0", 1, "Paris.", "stop", 20),
        ("openai_interleaved-0", 2, "The Seine.", "stop", 30),
        ("openai_interleaved-0", 3, "About 777 km", "length", 41),
        ("openai_interleaved-1", 1, "Hi!", "stop", 9),
        ("cohere_v1_ndjson_stream-0", 1, "Arr, Sir Isaac Newton, matey!", "stop", 74),
        ("cohere_v1_ndjson_stream-0", 2, "In 1687, ye landlubber.", "length", 95),
    ]
    assert list(frame["prompt"][:3]) == ["Capital of France?", "Its river?", "Length?"]
    assert frame.loc[2, "cached_input_tokens"] == 16


def test_import_skips_what_is_no_chat_request(tmp_path):
    plan = plan_import([DATA / "mixed_hosts.json", DATA / "broken_interaction.yaml"])
    assert [r["id"] for r in plan.records] == [
        "mixed_hosts-1", "mixed_hosts-2", "mixed_hosts-3", "mixed_hosts-5",
        "broken_interaction-0", "broken_interaction-2"]
    assert len(plan.skipped) == 3
    assert plan.skipped[0].endswith("interaction 0: not a chat request (GET /v1/models)")
    assert "interaction 1" in plan.skipped[2] and "response" in plan.skipped[2]
    gemini = plan.records[2]
    assert [m["role"] for m in gemini["messages"]] == ["system", "user", "assistant", "user",
                                                       "assistant"]
    assert gemini["metadata"]["model"] == "gemini-2.0-flash"
    dataset, frame = import_cassettes([DATA / "mixed_hosts.json"], tmp_path / "d.jsonl")
    assert not (tmp_path / "baseline.parquet").exists()
    assert list(frame["provider"]) == ["local", "assemblyai", "gemini", "local"]
    assert list(frame["turn"]) == [1, 1, 2, 1]
    assert list(frame["status"]) == ["ok", "ok", "ok", "error"]


def test_import_bad_input(tmp_path):
    only_models = tmp_path / "models.yaml"
    only_models.write_text(json.dumps({"version": 1, "interactions": [{
        "request": {"method": "GET", "uri": "https://api.openai.com/v1/models", "body": None,
                    "headers": {}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {},
                     "body": {"string": "{}"}}}]}))
    with pytest.raises(ValueError, match=r"no chat requests to import: .*not a chat request"):
        import_cassettes(only_models, tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match="unknown baseline format '.txt'"):
        import_cassettes(DATA / "openai_interleaved.yaml", tmp_path / "d.jsonl", tmp_path / "b.txt")
    assert not (tmp_path / "d.jsonl").exists()
    with pytest.raises(CassetteError):
        import_cassettes(DATA / "not_a_cassette.yaml", tmp_path / "d.jsonl")


# --- commands ------------------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness")
    add_foreign_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_inspect_command_prints_and_saves(tmp_path, capsys):
    out = tmp_path / "table.csv"
    assert run(["inspect", str(DATA / "mixed_hosts.json"), str(DATA / "cohere_v1_ndjson_stream.yaml"),
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 interactions in 2 cassettes" in printed
    for word in ("assemblyai", "gemini", "cohere-v1", "GET"):
        assert word in printed
    saved = pd.read_csv(out)
    assert list(saved.columns) == list(COLUMNS) and len(saved) == 8
    parquet = tmp_path / "table.parquet"
    assert run(["inspect", str(DATA / "openai_interleaved.yaml"), "-o", str(parquet)]) == 0
    assert pd.read_parquet(parquet)["input_tokens"].tolist() == [20, 9, 30, 41]


def test_import_command_writes_dataset_and_baseline(tmp_path, capsys):
    dataset_out, baseline_out = tmp_path / "d.jsonl", tmp_path / "b.parquet"
    assert run(["import", str(DATA / "openai_interleaved.yaml"), str(DATA / "mixed_hosts.json"),
                "--out", str(dataset_out), "--baseline", str(baseline_out)]) == 0
    printed = capsys.readouterr().out
    assert "6 conversations, 9 user turns, 8 baseline rows" in printed
    assert "not imported: " in printed and "GET /v1/models" in printed
    assert len(load_dataset(dataset_out)) == 6 and len(results.load(baseline_out)) == 8


def test_commands_raise_for_bad_input(tmp_path):
    with pytest.raises(CassetteError):
        run(["inspect", str(DATA / "not_a_cassette.yaml")])
    with pytest.raises(ValueError, match="unknown table format"):
        run(["inspect", str(DATA / "openai_interleaved.yaml"), "--out", str(tmp_path / "t.xlsx")])
    with pytest.raises(ValueError, match="unknown baseline format"):
        run(["import", str(DATA / "openai_interleaved.yaml"), "--out", str(tmp_path / "d.jsonl"),
             "--baseline", str(tmp_path / "b.xlsx")])
    with pytest.raises(SystemExit):  # --out is required
        run(["import", str(DATA / "openai_interleaved.yaml")])


# --- harness's own recordings ------------------------------------------------------------------


def test_importing_harness_recordings_gives_back_the_run(stub, small_dataset, tmp_path):
    """replay -> cassettes -> import: the same user turns, and the baseline is the run's rows."""
    from conftest import stub_providers

    from harness.replay import replay

    providers = stub_providers(stub.base_url)
    frame = replay(small_dataset, providers, record_mode="all", cassette_dir=tmp_path / "c",
                   progress=False)
    assert (frame["status"] == "ok").all()
    compared = ["conversation_id", "turn", "prompt", "response", "finish_reason",
                "raw_finish_reason", "input_tokens", "output_tokens", "total_tokens",
                "latency_ms", "http_status"]
    for provider in providers:
        folder = tmp_path / "c" / "small" / provider.name
        dataset, baseline = import_cassettes(folder, tmp_path / f"{provider.name}.jsonl")
        assert {c.metadata["protocol"] for c in dataset} == {provider.protocol}
        assert {c.metadata["provider"] for c in dataset} == {"local"}
        by_id = {c.metadata["source"]: c for c in dataset}
        for original in small_dataset:
            conv = by_id[str(folder / f"{original.id}.yaml")]
            assert [t.prompt for t in conversation_turns(conv)] == [
                t.prompt for t in conversation_turns(original)]
            assert conv.messages[0] == original.messages[0]
        run = frame[frame["provider"] == provider.name].copy()
        run["conversation_id"] = run["conversation_id"] + "-0"
        mine = baseline.sort_values(["conversation_id", "turn"]).reset_index(drop=True)
        run = run.sort_values(["conversation_id", "turn"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[compared], run[compared])
        assert set(mine["provider"]) == {"local"}


# file: per interaction (cache_write, reasoning, billed in, billed out), read by hand from the
# files' usage objects (Anthropic's cache_creation_input_tokens, OpenAI-style
# completion_tokens_details.reasoning_tokens, Gemini's thoughtsTokenCount, Cohere billed_units)
NEW_COLUMNS: dict[str, list[tuple]] = {
    "anthropic/mirascope-anthropic_max_tokens.yaml": [(0, NA, NA, NA)],
    "anthropic/pai-anthropic_parallel_tool_calls_parsed_body.yaml": [(0, NA, NA, NA)] * 2,
    "cohere_v1/langtrace-cohere_v1_chat_history.yaml": [(NA, NA, 31, 69)],
    "cohere_v1/oll-cohere_v1_chat_deprecation_warning.yaml": [(NA, NA, 7, 80)],
    "cohere_v2/lc-cohere_reasoning_tool_call_gzip.yaml": [(NA, NA, 80, 301)],
    "cohere_v2/lc-cohere_sql_agent_stream_finish_error.yaml": [(NA, NA, NA, NA)] * 2,
    "gemini/mirascope-gemini_max_tokens.yaml": [(NA, 38, NA, NA)],
    "groq/pai-groq_tool_use_failed_400_parsed_body.yaml": [(NA, NA, NA, NA), (NA, 22, NA, NA),
                                                           (NA, 59, NA, NA)],
    "openai/mirascope-openai_max_tokens_length.yaml": [(NA, 0, NA, NA)],
    "openrouter/mirascope-openrouter_chat_gzip.yaml": [(NA, 0, NA, NA)],
    "together/oll-together_chat_finish_eos.yaml": [(NA, NA, NA, NA)],
}


@pytest.mark.parametrize("name", list(NEW_COLUMNS))
def test_inspect_new_usage_columns_read_by_hand(table, name):
    rows = table[table["file"].str.endswith(name)].to_dict("records")
    got = [tuple(cell(r[c]) for c in ("cache_write_tokens", "reasoning_tokens",
                                      "billed_input_tokens", "billed_output_tokens")) for r in rows]
    assert got == NEW_COLUMNS[name]
    for r in rows:
        if cell(r["usage_raw"]) is None:
            assert cell(r["input_tokens"]) is None
            continue
        raw = json.loads(r["usage_raw"])
        if name.startswith("anthropic/"):  # input is every prompt token, cache included
            assert r["input_tokens"] == (raw["input_tokens"] + raw["cache_read_input_tokens"]
                                         + raw["cache_creation_input_tokens"])
        assert r["total_tokens"] == r["input_tokens"] + r["output_tokens"]
        assert cell(r["response_id"]) is not None


def test_inspect_names_a_recorded_transport_failure(tmp_path):
    """An attempt that got no HTTP answer shows its own error, not the 599 it is stored as."""
    import httpx

    from harness.cassettes import Cassette

    path = tmp_path / "c.yaml"
    cassette = Cassette.open(path, "all")
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions",
                            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    cassette.record_failure(request, "ReadTimeout", "ReadTimeout: timed out", 12.0)
    cassette.save()
    (row,) = inspect_cassettes(path).to_dict("records")
    assert row["finish_reason"] == "error"
    assert row["error"] == "ReadTimeout: timed out"
