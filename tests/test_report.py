"""`report`: the `view` page of one run, kept for old scripts and CI jobs."""

from __future__ import annotations

import json
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
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # opens offline
    data = json.loads(re.search(r"id='harness-data'>(.*?)</script>", text, re.S).group(1))
    (run,) = data["runs"]
    assert [c["change"] for c in run["changes"].values()] == ["response"]
    assert "a changed reply" in run["rows"]["response"]
    assert {"turns", "output_tokens", "latency_p50_ms"} <= set(run["usage"]["columns"])


def test_report_of_a_missing_file(tmp_path):
    proc = run_cli("report", str(tmp_path / "nope.parquet"), "--html", str(tmp_path / "r.html"))
    assert_one_clear_line(proc, "nope.parquet")
    assert not (tmp_path / "r.html").exists()
