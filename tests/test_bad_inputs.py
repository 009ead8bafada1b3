"""Every file in tests/bad_inputs/ and every bad argument: one clear line, exit 2, nothing written.

Each case names what the one line on stderr must contain: the file (and line) or the
field, and what was expected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
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
    "lone_surrogate.jsonl": [":1:", "lone UTF-16 surrogate", "expected valid Unicode text"],
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
    "port_out_of_range.toml": ["providers.x.base_url", "port '99999'", "expected 1-65535"],
    "port_zero.toml": ["providers.x.base_url", "port '0'", "expected 1-65535"],
    "space_in_host.toml": ["providers.x.base_url", "host '127.0.0. 1'", "not a host name"],
    "no_host.toml": ["providers.x.base_url", "http:// or https:// URL"],
    "negative_max_tokens.toml": ["providers.x.params", "max_tokens", "positive integer", "-5"],
    "max_tokens_a_string.toml": ["providers.x.params", "max_tokens", "positive integer"],
    "nan_temperature.toml": ["providers.x.params", "temperature", "finite number", "nan"],
    "negative_top_p.toml": ["providers.x.params", "top_p", "expected a number >= 0"],
    "infinite_nested_param.toml": ["providers.x.params", "extra_body.penalty", "finite"],
    "negative_rate_limit.toml": ["providers.x.rate_limit", "expected requests per minute > 0"],
    "header_name_with_crlf.toml": ["providers.x.headers", "not a valid HTTP header name"],
    "header_name_with_colon.toml": ["providers.x.headers", "'x-a: b'", "not a valid HTTP"],
    "header_value_with_newline.toml": ["providers.x.headers", "'x-a'", "CR, LF or NUL"],
}

CASSETTES = {
    "truncated.yaml": [":5:", "not a valid cassette"],
    "wrong_version.yaml": ["unsupported cassette version 2", "expected 1"],
    "binary_garbage.yaml": ["not a cassette", "not UTF-8"],
    "not_a_cassette.yaml": ["expected an 'interactions' list"],
    "interaction_without_response.yaml": ["interaction 0", "missing 'response'"],
    "empty.yaml": ["expected an 'interactions' list"],
    "alias_bomb.yaml": [":2:", "YAML alias", "not allowed"],
}

ARGUMENTS = {
    "unknown command": (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    "no dataset": (["replay"], ["required: dataset"]),
    "bad record mode": (["replay", "datasets/demo.jsonl", "--record-mode", "sometimes"],
                        ["--record-mode", "invalid choice: 'sometimes'"]),
    "bad history": (["replay", "datasets/demo.jsonl", "--history", "sideways"],
                    ["--history", "invalid choice: 'sideways'"]),
    "concurrency not a number": (["replay", "datasets/demo.jsonl", "--concurrency", "lots"],
                                 ["--concurrency", "expected a number or auto, got 'lots'"]),
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
    "concurrency a billion": (["replay", "datasets/demo.jsonl", "--concurrency", "1000000000"],
                              ["--concurrency 1000000000 is too many", "at most 1024"]),
    "the same provider twice": (["replay", "datasets/demo.jsonl", "-p", "stub-cohere-v2", "-p",
                                 "stub-cohere-v2", "--out", "{tmp}/r.parquet"],
                                ["'stub-cohere-v2' is named more than once"]),
    "timeout zero": (["replay", "datasets/demo.jsonl", "--timeout", "0"],
                     ["--timeout", "expected seconds > 0"]),
    "timeout nan": (["replay", "datasets/demo.jsonl", "--timeout", "nan"],
                    ["--timeout", "expected seconds > 0"]),
    "timeout not a number": (["replay", "datasets/demo.jsonl", "--timeout", "soon"],
                             ["--timeout", "invalid number: 'soon'"]),
    "temperature nan": (["replay", "datasets/demo.jsonl", "--temperature", "nan"],
                        ["--temperature", "expected a finite number"]),
    "temperature negative": (["replay", "datasets/demo.jsonl", "--temperature", "-1"],
                             ["--temperature", "expected a number >= 0"]),
    "max tokens zero": (["replay", "datasets/demo.jsonl", "--max-tokens", "0"],
                        ["--max-tokens", "positive integer"]),
    "out under a file": (["replay", "datasets/demo.jsonl", "--out", "datasets/demo.jsonl/r.csv"],
                         ["--out datasets/demo.jsonl/r.csv", "demo.jsonl is a file, not a folder"]),
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
    assert not (tmp_path / "out.parquet.journal.jsonl").exists()  # no stray journal either


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


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_replay_out_that_is_its_own_dataset_is_refused(tmp_path):
    data = tmp_path / "d.jsonl"
    shutil.copyfile(ROOT / "datasets" / "demo.jsonl", data)
    (tmp_path / "link.jsonl").symlink_to(data)
    before = _snapshot(tmp_path)
    for out in (str(data), f"{tmp_path}/./sub/../d.jsonl", str(tmp_path / "link.jsonl")):
        proc = run_cli("replay", str(data), "--no-progress", "--out", out)
        assert_one_clear_line(proc, f"--out {out}", "which this command reads")
        assert _snapshot(tmp_path) == before


def test_report_never_writes_over_its_inputs_or_an_existing_page(tmp_path):
    results = tmp_path / "r.jsonl"
    shutil.copyfile(ROOT / "tests" / "baselines" / "demo.jsonl", results)
    baseline = tmp_path / "b.jsonl"
    shutil.copyfile(results, baseline)
    page = tmp_path / "page.html"
    page.write_text("my own notes")
    before = _snapshot(tmp_path)
    for html, needles in ((results, ["which this command reads"]),
                          (baseline, ["which this command reads"]),
                          (page, ["exists", "--force"])):
        proc = run_cli("report", str(results), "--baseline", str(baseline), "--html", str(html))
        assert_one_clear_line(proc, f"--html {html}", *needles)
        assert _snapshot(tmp_path) == before
    assert run_cli("report", str(results), "--html", str(page), "--force").returncode == 0
    assert "<html" in page.read_text()


def test_import_never_replaces_a_file_without_force(tmp_path):
    cassette = ROOT / "cassettes" / "demo" / "stub-cohere-v2" / "name-memory.yaml"
    dataset, baseline = tmp_path / "d.jsonl", tmp_path / "b.jsonl"
    dataset.write_text("mine\n")
    before = _snapshot(tmp_path)
    proc = run_cli("import", str(cassette), "--out", str(dataset))
    assert_one_clear_line(proc, f"--out {dataset}", "exists", "--force")
    proc = run_cli("import", str(cassette), "--out", str(tmp_path / "new.jsonl"),
                   "--baseline", str(dataset))
    assert_one_clear_line(proc, f"--baseline {dataset}", "exists")
    proc = run_cli("import", str(cassette), "--out", str(baseline), "--baseline", str(baseline))
    assert_one_clear_line(proc, "--baseline", "--out too")
    assert _snapshot(tmp_path) == before
    assert run_cli("import", str(cassette), "--out", str(dataset), "--force").returncode == 0
    assert dataset.read_text() != "mine\n"


def test_200k_deep_nesting_is_one_line(tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    data = tmp_path / "deep.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": ' + deep + "}\n")
    proc = run_cli("replay", str(data), "-p", "openai", "--cassettes", str(tmp_path / "c"))
    assert_one_clear_line(proc, "deep.jsonl:2:", "nested too deeply")

    cassettes = tmp_path / "cassettes"
    shutil.copytree(ROOT / "cassettes" / "demo" / "stub-cohere-v2", cassettes / "demo" / "stub-cohere-v2")
    for text in ('{"interactions": ' + deep + ', "version": 1}', "interactions: " + deep):
        (cassettes / "demo" / "stub-cohere-v2" / "name-memory.yaml").write_text(text)
        proc = run_cli("replay", "datasets/demo.jsonl", "-p", "stub-cohere-v2", "--no-progress",
                       "--cassettes", str(cassettes))
        assert_one_clear_line(proc, "name-memory.yaml", "not a valid cassette", "nest")


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage", b"not json at all\n{}\n",
                                     b'["a list"]\n'])
def test_a_garbage_journal_is_one_line_naming_it(tmp_path, garbage):
    out = tmp_path / "r.parquet"
    journal = tmp_path / "r.parquet.journal.jsonl"
    journal.write_bytes(garbage)
    proc = run_cli("replay", "datasets/demo.jsonl", "--no-progress", "--out", str(out))
    assert_one_clear_line(proc, str(journal), "not a harness journal", "delete the file")
    assert journal.read_bytes() == garbage and not out.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    out = tmp_path / "r.jsonl"
    out.symlink_to("/dev/full")  # every write: ENOSPC
    proc = run_cli("replay", "datasets/demo.jsonl", "--no-progress", "--out", str(out))
    assert_one_clear_line(proc, str(out), "cannot write", "No space left on device")


def test_the_corpus_is_at_least_thirty_cases():
    assert len(DATASETS) + len(PROVIDER_FILES) + len(CASSETTES) + len(ARGUMENTS) >= 69
    on_disk = {p.name for p in BAD.rglob("*") if p.is_file()}
    assert on_disk == set(DATASETS) | set(PROVIDER_FILES) | set(CASSETTES)


_PEAK = """
import json, resource, sys
from harness.cassettes import CassetteError, read_cassette
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_cassette(sys.argv[1])
    outcome = "read"
except CassetteError as exc:
    outcome = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "grew_mb": (after - before) / 1024}))
"""


def _read_cost(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_reading_a_cassette_costs_bounded_memory(tmp_path):
    """A 509-byte alias bomb (billions of nodes once expanded) is refused for almost nothing;
    a 1 MB cassette in vcrpy's block style costs far less than 100 MB to read."""
    bomb = _read_cost(BAD / "cassettes" / "alias_bomb.yaml")
    assert "YAML alias" in bomb["outcome"] and bomb["grew_mb"] < 20, bomb
    body = json.dumps({"messages": [{"role": "user", "content": "word " * 400}]})
    interaction = {"request": {"body": body, "headers": {}, "method": "POST",
                               "uri": "http://127.0.0.1/v1/chat/completions"},
                   "response": {"body": {"string": body}, "headers": {},
                                "status": {"code": 200, "message": "OK"}}}
    big = tmp_path / "big.yaml"
    copies = [json.loads(json.dumps(interaction)) for _ in range(250)]  # no anchors: copies
    big.write_text(yaml.safe_dump({"interactions": copies, "version": 1}))
    assert big.stat().st_size > 1_000_000
    cost = _read_cost(big)
    assert cost["outcome"] == "read" and cost["grew_mb"] < 100, cost
