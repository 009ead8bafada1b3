"""What the commands print in an 80-column terminal, and in the machine-readable formats."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT
from rich.console import Console
from test_cli import assert_one_clear_line, run_cli

from harness import results
from harness.cassettes import recorded_providers
from harness.cli import print_frame, print_report

DEMO_PROVIDERS = set(recorded_providers(ROOT / "cassettes", "demo"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("term") / "demo.parquet"
    proc = run_cli("replay", "datasets/demo.jsonl", "--no-progress", "-o", str(out),
                   env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def _fits(text: str, width: int = 80) -> None:
    wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not wide, wide


def test_replay_prints_a_summary_that_fits_80_columns(demo):
    out, stdout = demo
    _fits(stdout)
    lines = stdout.splitlines()
    assert len(lines) < 8 + len(DEMO_PROVIDERS)  # a line per provider, not 387 of replies
    header = next(line for line in lines if line.startswith("provider"))
    assert header.split()[:4] == ["provider", "turns", "ok", "err"]
    assert {"stop", "length", "tok", "p50"} <= set(header.split())
    rows = {line.split()[0]: line.split() for line in lines if line.split()
            and line.split()[0] in DEMO_PROVIDERS}
    assert set(rows) <= DEMO_PROVIDERS and "local-gemma3" in rows  # long names cut with …
    names = [line.split()[0] for line in lines[lines.index(header) + 1:][:len(DEMO_PROVIDERS)]]
    assert len(set(names)) == len(DEMO_PROVIDERS)  # cut in the middle: -cohere-v1 / -v2 differ
    assert any("…" in name and name.endswith("ohere-v2") for name in names)
    assert rows["local-gemma3"][1:6] == ["26", "26", "0", "0", "26"]  # every turn ran to length
    assert any(str(out) in line for line in lines)


def test_replies_are_cut_with_an_ellipsis_never_folded(demo):
    out, _ = demo
    proc = run_cli("compare", str(out), "--show", "replies", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    _fits(proc.stdout)
    table = proc.stdout.split("Summary")[0].splitlines()
    body = table[2:]  # after the title and the header: one line per turn, never folded
    body = [line for line in body if line.strip()]
    assert len(body) == 26 and all("…" in line for line in body)
    # a turn number stays whole on its row: the rows are one line each, in order
    assert [line.split()[1] for line in body[:3]] == ["1", "2", "3"]


def test_a_long_number_never_folds_in_a_narrow_console():
    import pandas as pd

    frame = pd.DataFrame({"name": ["a" * 200], "output_tokens": pd.array([1234567890], "Int64")})
    console = Console(width=40, record=True, file=io.StringIO())
    print_frame(frame, "t", console)
    text = console.export_text()
    _fits(text, 40)
    assert "1234567890" in text and "…" in text


def test_print_report_fits_a_fixed_80_column_console(demo):
    frame = results.load(demo[0])
    console = Console(width=80, record=True, file=io.StringIO())
    print_report(frame, console, show="all")
    _fits(console.export_text())


def test_compare_formats(demo):
    out, _ = demo
    md = run_cli("compare", str(out), "--format", "markdown").stdout
    assert "## summary" in md and "| provider | turns |" in md
    data = json.loads(run_cli("compare", str(out), "--format", "json").stdout)
    assert {r["provider"] for r in data["usage"]} == DEMO_PROVIDERS
    assert {r["turns"] for r in data["summary"]} == {26}
    text = run_cli("compare", str(out), "--format", "csv").stdout
    usage = text.split("# usage\n")[1]
    rows = list(csv.DictReader(io.StringIO(usage)))
    assert len(rows) == len(DEMO_PROVIDERS) and rows[0]["turns"] == "26"


def test_diff_ignore_tolerance_formats_and_junit(demo, tmp_path):
    out, _ = demo
    frame = results.load(out)
    frame.loc[0, "response"] = "a different reply"
    frame.loc[1, "output_tokens"] = frame.loc[1, "output_tokens"] + 3
    results.save(frame, tmp_path / "b.parquet")
    b = str(tmp_path / "b.parquet")

    rows = json.loads(run_cli("diff", str(out), b, "--format", "json").stdout)
    assert [r["change"] for r in rows] == ["response", "output_tokens"]
    proc = run_cli("diff", str(out), b, "--format", "json", "--tolerance", "tokens=3")
    assert proc.returncode == 1 and [r["change"] for r in json.loads(proc.stdout)] == ["response"]
    proc = run_cli("diff", str(out), b, "--format", "csv", "--tolerance", "tokens=2",
                   "--ignore", "response")
    assert proc.returncode == 1
    assert [r["change"] for r in csv.DictReader(io.StringIO(proc.stdout))] == ["output_tokens"]
    proc = run_cli("diff", str(out), b, "--ignore", "response", "--tolerance", "output_tokens=5")
    assert proc.returncode == 0 and "no changes" in proc.stdout

    junit = tmp_path / "drift.xml"
    proc = run_cli("diff", str(out), b, "--junit-xml", str(junit), env={"COLUMNS": "80"})
    assert proc.returncode == 1
    _fits(proc.stdout)
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(frame) and suite.get("failures") == "2"
    failed = [c for c in cases if c.find("failure") is not None]
    assert {(c.get("classname"), c.get("name")) for c in failed} == {
        (f"{frame.loc[i, 'provider']}.{frame.loc[i, 'conversation_id']}", f"turn {frame.loc[i, 'turn']}")
        for i in (0, 1)}
    assert "a different reply" in "".join(c.find("failure").text for c in failed)


def test_diff_bad_flags_are_one_line(demo):
    out, _ = demo
    assert_one_clear_line(run_cli("diff", str(out), str(out), "--tolerance", "tokens"),
                          "--tolerance", "COLUMN=NUMBER")
    assert_one_clear_line(run_cli("diff", str(out), str(out), "--ignore", "colour"),
                          "--ignore colour", "response")
    assert_one_clear_line(run_cli("diff", str(out), str(out), "--tolerance", "response=2"),
                          "--tolerance response")


def test_compare_metric_and_judge_verdicts_fit_80_columns(demo, tmp_path):
    from test_significance import verdict_table

    out, _ = demo
    scored = tmp_path / "scored.parquet"
    proc = run_cli("score", str(out), "-s", "similarity", "--out", str(scored))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("compare", str(scored), "--metric", "similarity", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    _fits(proc.stdout)
    text = " ".join(proc.stdout.split())
    assert "similarity: mean per provider, 95% bootstrap interval" in text
    assert "beats local-gemma3 on similarity by" in text  # a base model that echoes markers
    a, b = "local-smollm2-anthropic", "local-smollm2-cohere-v2"
    results.save(verdict_table(30, 10, 4, 6, 2, a=a, b=b),
                 tmp_path / f"scored.pairwise-{a}-{b}.parquet")
    proc = run_cli("compare", str(scored), "--metric", "winner", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    _fits(proc.stdout)
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("judged"))
    assert header.split() == ["judged", "a", "wins", "b", "wins", "ties", "inconsistent",
                              "unparsable", "a", "win", "%", "low", "%", "high", "%"]
    assert lines[lines.index(header) + 1].split()[:8] == ["52", "30", "10", "4", "6", "2", "75", "60"]
    text = " ".join(proc.stdout.split())
    assert f"a = {a}, b = {b}" in text
    assert (f"{a} wins 75% [60%, 86%] of 40 decisive turns against {b}; of 52 judged turns "
            "4 tied, 6 inconsistent, 2 unparsable; 26 conversations") in text
