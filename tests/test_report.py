"""The HTML report a reviewer opens from a CI artifact."""

from __future__ import annotations

import re

from test_cli import assert_one_clear_line, run_cli

from harness import results


def test_report_is_one_self_contained_page(tmp_path):
    out = tmp_path / "demo.parquet"
    assert run_cli("replay", "datasets/demo.jsonl", "--no-progress", "-o", str(out)).returncode == 0
    changed = results.load(out)
    changed.loc[3, "response"] = "a changed reply"
    results.save(changed, tmp_path / "changed.parquet")

    page = tmp_path / "report.html"
    proc = run_cli("report", str(tmp_path / "changed.parquet"), "--html", str(page),
                   "--baseline", str(out))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', text)) == 3
    assert not re.search(r'(src|href)="https?://', text)  # opens offline from an artifact
    for heading in ("Changes against the baseline (1)", "Finish reasons", "Token usage and latency",
                    "Replies, side by side"):
        assert heading in text
    assert "a changed reply" in text
    assert text.count("<table") >= 4


def test_report_of_a_missing_file(tmp_path):
    proc = run_cli("report", str(tmp_path / "nope.parquet"), "--html", str(tmp_path / "r.html"))
    assert_one_clear_line(proc, "nope.parquet")
    assert not (tmp_path / "r.html").exists()
