"""`python -m harness` as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from harness import results


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=cwd or ROOT, capture_output=True,
        text=True, env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=120,
    )


def assert_one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_shipped_demo_replays_offline_and_prints_the_tables(tmp_path):
    out = tmp_path / "demo.parquet"
    proc = run_cli("replay", "datasets/demo.jsonl", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Summary" in proc.stdout and f"wrote {len(results.load(out))} rows to {out}" in proc.stdout
    frame = results.load(out)
    assert set(frame["provider"]) == {"local-smollm2", "local-gemma3", "local-smollm2-anthropic",
                                      "local-smollm2-cohere-v1", "local-smollm2-cohere-v2",
                                      "local-smollm2-gemini", "stub-cohere-v1", "stub-cohere-v2"}
    assert frame.groupby("provider").size().eq(26).all()
    assert "length" in set(frame["finish_reason"])


def test_compare_and_diff_on_results_files(tmp_path):
    out = tmp_path / "a.jsonl"
    assert run_cli("replay", "datasets/demo.jsonl", "--no-progress", "-o", str(out)).returncode == 0
    proc = run_cli("compare", str(out), "--show", "all")
    assert proc.returncode == 0 and "Finish reasons" in proc.stdout
    assert run_cli("diff", str(out), str(out)).returncode == 0

    changed = results.load(out)
    changed.loc[0, "response"] = "something else entirely"
    changed.loc[1, "finish_reason"] = "length"
    results.save(changed, tmp_path / "b.csv")
    proc = run_cli("diff", str(out), str(tmp_path / "b.csv"))
    assert proc.returncode == 1
    assert "2 changed rows" in proc.stdout and "something else" in proc.stdout


def test_bad_dataset_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [\n')
    proc = run_cli("replay", str(bad), "-p", "openai")
    assert_one_clear_line(proc, f"{bad}:2")


def test_unknown_provider():
    proc = run_cli("replay", "datasets/demo.jsonl", "-p", "no-such-provider")
    assert_one_clear_line(proc, "unknown provider 'no-such-provider'", "known:")


def test_missing_recording(tmp_path):
    proc = run_cli("replay", "datasets/demo.jsonl", "-p", "openai", "--cassettes", str(tmp_path))
    assert_one_clear_line(proc, "no recording for conversation 'capital-followup' turn 1",
                          "'openai'", "--record-mode once")


def test_missing_api_key_in_a_recording_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "replay", "datasets/demo.jsonl", "-p", "openai",
         "--record-mode", "all", "--cassettes", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=60,
    )
    assert_one_clear_line(proc, "OPENAI_API_KEY is not set")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args,needle", [
    (["replay", "no/such/file.jsonl"], "no/such/file.jsonl"),
    (["compare", "no-such-results.parquet"], "no-such-results.parquet"),
    (["replay", "datasets/demo.jsonl", "--history", "sideways"], "invalid choice: 'sideways'"),
    (["replay", "datasets/demo.jsonl", "--providers-file", "nope.toml"], "nope.toml"),
])
def test_other_bad_arguments(args, needle):
    assert_one_clear_line(run_cli(*args), needle)


def test_providers_lists_presets_keys_and_cassettes():
    proc = run_cli("providers", env={"TOGETHER_API_KEY": "x"})
    assert proc.returncode == 0, proc.stderr
    for name in ("together", "assemblyai", "cohere", "cohere-v1", "openai", "anthropic",
                 "stub-cohere-v1"):
        assert name in proc.stdout
    assert "TOGETHER_API_KEY set" in proc.stdout
    assert "demo" in proc.stdout


def test_timeout_on_the_command_line_bounds_each_request(tmp_path):
    from harness.stub_server import StubServer

    (tmp_path / "d.jsonl").write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n')
    with StubServer(delay=5.0) as stub:
        (tmp_path / "harness.toml").write_text(
            f'[providers.slow]\nprotocol = "openai"\nbase_url = "{stub.base_url}/v1"\nmodel = "m"\n')
        proc = run_cli("replay", "d.jsonl", "-p", "slow", "--record-mode", "once", "--timeout",
                       "0.2", "--no-progress", "--out", "r.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = results.load(tmp_path / "r.jsonl").iloc[0]
    assert row["status"] == "error" and "Timeout" in row["error"] and row["attempts"] == 4
