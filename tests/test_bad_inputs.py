"""Every file in tests/bad_inputs/ and every bad argument: one clear line, exit 2, nothing written.

Each case names what the one line on stderr must contain: the file (and line) or the
field, and what was expected.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT
from test_cli import assert_one_clear_line, run_cli

BAD = ROOT / "tests" / "bad_inputs"

DATASETS = {
    "invalid_json.jsonl": [":2:", "invalid JSON", "expected one JSON object per line"],
    "not_an_object.jsonl": [":1:", "record is a number", "expected a JSON object"],
    "messages_not_a_list.jsonl": [":1:", "messages is a string", "expected a list"],
    "unknown_role.jsonl": [":1:", "unknown role 'wizard'", "expected one of"],
    "empty_conversation.jsonl": [":2:", "empty conversation", "expected at least one user"],
    "no_user_turn.jsonl": [":1:", "no user message", "expected at least one user turn"],
    "tool_without_its_call.jsonl": [":1:", "tool_call_id 'call_9'", "expected one of: call_1"],
    "latin1_bytes.jsonl": [":1:", "not UTF-8", "0xe9"],
    "empty_file.jsonl": ["empty file", "expected JSON Lines or a JSON array"],
    "content_wrong_type.jsonl": [":1:", "content is a number", "expected a string"],
    "unknown_format.jsonl": [":1:", "{prompt, completion}", "expected messages"],
    "missing_content.jsonl": [":1:", "content is null"],
    "sharegpt_unknown_speaker.jsonl": [":1:", "unknown role 'alien'"],
    "mtbench_turns_not_a_list.jsonl": [":1:", "turns is a string", "expected a list"],
    "array_bad_record.json": [":3:", "record 2", "content is an object"],
    "turn_pair_without_user.jsonl": [":1:", "history item 2 has no 'user'"],
    "cohere_v1_message_not_text.jsonl": [":1:", "message is a number", "expected"],
}

PROVIDER_FILES = {
    "unknown_protocol.toml": ["providers.x.protocol", "unknown protocol 'carrier-pigeon'",
                              "expected one of"],
    "missing_base_url.toml": ["providers.x.base_url", "Field required"],
    "bad_url.toml": ["providers.x.base_url", "http:// or https://", "ftp://"],
    "invalid_toml.toml": ["invalid TOML", "line 1"],
    "no_providers_table.toml": ["expected [providers.NAME] tables"],
    "params_not_a_table.toml": ["providers.x.params", "dictionary"],
    "misspelt_field.toml": ["providers.x.modle", "unknown field", "model"],
    "provider_not_a_table.toml": ["providers.x", "expected a table"],
    "unknown_preset.toml": ["providers.x.preset", "unknown preset 'no-such-preset'"],
}

CASSETTES = {
    "truncated.yaml": [":5:", "not a valid cassette"],
    "wrong_version.yaml": ["unsupported cassette version 2", "expected 1"],
    "binary_garbage.yaml": ["not a cassette", "not UTF-8"],
    "not_a_cassette.yaml": ["expected an 'interactions' list"],
    "interaction_without_response.yaml": ["interaction 0", "missing 'response'"],
    "empty.yaml": ["expected an 'interactions' list"],
}

ARGUMENTS = {
    "unknown command": (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    "no dataset": (["replay"], ["required: dataset"]),
    "bad record mode": (["replay", "datasets/demo.jsonl", "--record-mode", "sometimes"],
                        ["--record-mode", "invalid choice: 'sometimes'"]),
    "bad history": (["replay", "datasets/demo.jsonl", "--history", "sideways"],
                    ["--history", "invalid choice: 'sideways'"]),
    "concurrency not a number": (["replay", "datasets/demo.jsonl", "--concurrency", "lots"],
                                 ["--concurrency", "invalid int value: 'lots'"]),
    "concurrency zero": (["replay", "datasets/demo.jsonl", "--concurrency", "0"],
                         ["--concurrency must be at least 1"]),
    "limit zero": (["replay", "datasets/demo.jsonl", "--limit", "0"], ["limit is 0"]),
    "unknown results format": (["replay", "datasets/demo.jsonl", "--out", "{tmp}/r.xlsx"],
                               ["r.xlsx", "unknown results format '.xlsx'"]),
    "missing dataset": (["replay", "{tmp}/nope.jsonl"], ["nope.jsonl", "no such file"]),
    "dataset is a folder": (["replay", "datasets"], ["datasets"]),
    "unknown provider": (["replay", "datasets/demo.jsonl", "-p", "gpt-17"],
                         ["unknown provider 'gpt-17'", "known:"]),
    "diff of a dataset": (["diff", "tests/baselines/demo.jsonl", "datasets/demo.jsonl"],
                          ["datasets/demo.jsonl", "not a results table", "missing columns"]),
    "compare missing file": (["compare", "{tmp}/none.parquet"], ["none.parquet", "no such file"]),
}


def _files(tmp: Path) -> set[Path]:
    return {p for p in tmp.rglob("*")}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_bad_dataset(name, tmp_path):
    before = _files(tmp_path)
    proc = run_cli("replay", str(BAD / "datasets" / name), "-p", "openai",
                   "--cassettes", str(tmp_path), "--out", str(tmp_path / "out.parquet"))
    assert_one_clear_line(proc, f"bad_inputs/datasets/{name}", *DATASETS[name])
    assert _files(tmp_path) == before


@pytest.mark.parametrize("name", sorted(PROVIDER_FILES))
def test_bad_provider_file(name, tmp_path):
    proc = run_cli("replay", "datasets/demo.jsonl", "--providers-file",
                   str(BAD / "providers" / name), "-p", "x", "--cassettes", str(tmp_path),
                   "--out", str(tmp_path / "out.parquet"))
    assert_one_clear_line(proc, f"bad_inputs/providers/{name}", *PROVIDER_FILES[name])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", sorted(CASSETTES))
def test_bad_cassette(name, tmp_path):
    cassettes = tmp_path / "cassettes"
    shutil.copytree(ROOT / "cassettes" / "demo" / "stub-cohere-v2",
                    cassettes / "demo" / "stub-cohere-v2")
    target = cassettes / "demo" / "stub-cohere-v2" / "name-memory.yaml"
    shutil.copyfile(BAD / "cassettes" / name, target)
    before = {p: p.read_bytes() for p in cassettes.rglob("*") if p.is_file()}
    proc = run_cli("replay", "datasets/demo.jsonl", "-p", "stub-cohere-v2", "--cassettes",
                   str(cassettes), "--no-progress", "--out", str(tmp_path / "out.parquet"))
    assert_one_clear_line(proc, str(target), *CASSETTES[name])
    assert {p: p.read_bytes() for p in cassettes.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("case", sorted(ARGUMENTS))
def test_bad_arguments(case, tmp_path):
    args, needles = ARGUMENTS[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_one_clear_line(run_cli(*args), *needles)
    assert not any(tmp_path.iterdir())


def test_a_50_mb_line_is_named_not_printed(tmp_path):
    path = tmp_path / "huge.jsonl"
    filler = "x" * (50 * 1024 * 1024)
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n'
                    f'{{"messages": [{{"role": "user", "content": "{filler}"}}], \n')
    proc = run_cli("replay", str(path), "-p", "openai", "--cassettes", str(tmp_path / "c"))
    assert_one_clear_line(proc, "huge.jsonl:2:", "invalid JSON")
    assert len(proc.stderr) < 1000


def test_the_corpus_is_at_least_thirty_cases():
    assert len(DATASETS) + len(PROVIDER_FILES) + len(CASSETTES) + len(ARGUMENTS) >= 30
    on_disk = {p.name for p in BAD.rglob("*") if p.is_file()}
    assert on_disk == set(DATASETS) | set(PROVIDER_FILES) | set(CASSETTES)
