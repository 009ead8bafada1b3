"""`harness view`: the page a reviewer opens, checked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT
from test_cli import assert_one_clear_line, run_cli

from harness import results
from harness.cassettes import recorded_providers

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DEMO = recorded_providers(ROOT / "cassettes", "demo")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The demo replayed offline, and a copy in which two replies and a finish reason changed."""
    folder = tmp_path_factory.mktemp("view")
    base = folder / "demo.parquet"
    proc = run_cli("replay", "datasets/demo.jsonl", "--no-progress", "-o", str(base))
    assert proc.returncode == 0, proc.stderr
    changed = results.load(base)
    first = changed.index[(changed["conversation_id"] == "capital-followup")
                          & (changed["provider"] == "local-smollm2") & (changed["turn"] == 1)][0]
    changed.loc[first, "response"] = "The capital of France is Lyon, on the Rhone."
    changed.loc[first + 1, "finish_reason"] = "length"
    results.save(changed, folder / "changed.jsonl")
    page = folder / "view.html"
    proc = run_cli("view", str(folder / "changed.jsonl"), str(base), "--baseline", str(base),
                   "--out", str(page))
    assert proc.returncode == 0, proc.stderr
    return {"base": base, "changed": folder / "changed.jsonl", "page": page, "folder": folder}


def _data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    match = re.search(r"<script type='application/json' id='harness-data'>(.*?)</script>", text, re.S)
    return json.loads(match.group(1))


def test_page_carries_the_run_and_fetches_nothing(runs):
    text = runs["page"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<NA>" not in text
    data = _data(runs["page"])
    assert [r["name"] for r in data["runs"]] == [str(runs["changed"]), str(runs["base"])]
    run = data["runs"][0]
    meta = run["meta"]  # carried through a JSONL file by its sidecar
    assert meta["dataset"] == "demo" and meta["history"] == "auto" and meta["record_mode"] == "none"
    assert {p["name"] for p in meta["providers"]} >= {"local-smollm2", "stub-cohere-v2"}
    assert len(run["changes"]) == 2
    assert {c["change"] for c in run["changes"].values()} == {"response", "finish_reason"}
    # auto history on a dataset with replies: the messages sent are the dataset's own
    sent = run["threads"]["capital-followup"]["local-smollm2"]
    assert sent["messages"][0][0] == "system" and sent["cuts"] == [2, 4, 6]
    assert {source for _, _, source in sent["messages"]} == {"dataset"}
    assert data["runs"][1]["changes"] == {}  # the baseline against itself


def test_view_refuses_to_overwrite_and_reports_bad_input(runs, tmp_path):
    proc = run_cli("view", str(runs["base"]), "--out", str(runs["page"]))
    assert_one_clear_line(proc, "exists", "--force")
    proc = run_cli("view", str(runs["base"]), "--out", str(runs["base"]), "--force")
    assert_one_clear_line(proc, "which this command reads")
    assert results.load(runs["base"]).shape[0] == 26 * len(DEMO)  # the input is untouched
    proc = run_cli("view", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "v.html"))
    assert_one_clear_line(proc, "nope.parquet")
    assert not (tmp_path / "v.html").exists()


def test_report_is_the_view_and_survives_a_run_without_tokens(runs, tmp_path):
    frame = results.load(runs["base"])
    frame["output_tokens"] = pd.array([None] * len(frame), dtype="Int64")
    results.save(frame, tmp_path / "no_tokens.parquet")
    page = tmp_path / "report.html"
    proc = run_cli("report", str(tmp_path / "no_tokens.parquet"), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    assert "id='harness-data'" in page.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (.ci/run installs it from Debian)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


def test_the_page_in_a_real_browser(runs, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requested: list[str] = []

    def route(r):
        requested.append(r.request.url)
        (r.continue_() if r.request.url.startswith("file:") else r.abort())

    page.route("**/*", route)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = runs["page"].as_uri()
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    assert requested == [url] and not errors
    shot = lambda name: page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=False)  # noqa: E731
    body = page.inner_text("body")
    assert "<NA>" not in body and "\\n" not in body
    assert "dataset: demo" in body and "history: auto" in body
    assert page.inner_text("#count") == "26 of 26 turns"
    # five providers at 1400 px: every column is reachable (the matrix scrolls, nothing clipped)
    assert page.locator("#matrix thead th").count() == 3 + len(DEMO)
    shot("1-matrix")

    page.fill("#search", "Seine")
    assert page.inner_text("#count") != "26 of 26 turns"
    assert all("seine" in t.lower() for t in page.locator("#matrix tbody tr").all_inner_texts())
    shot("2-search")

    page.fill("#search", "")
    page.uncheck(".provider-filter[value='local-gemma3']")  # it runs to `length` every turn
    assert page.locator("#matrix thead th").count() == 3 + len(DEMO) - 1
    page.select_option("#reason-filter", "length")
    rows = page.locator("#matrix tbody tr")
    assert 0 < rows.count() < 26
    for text in rows.all_inner_texts():
        assert "length" in text
    page.check("#changed-only")
    assert page.locator("#matrix tbody tr").count() == 1
    shot("3-filters")
    page.uncheck("#changed-only")
    page.select_option("#reason-filter", "")
    page.check("#errored-only")  # the demo has no failed turn
    assert page.inner_text("#count") == "0 of 26 turns"
    page.uncheck("#errored-only")

    page.click("#matrix thead th[data-sort='local-smollm2']")  # sort by that provider's tokens
    page.click("#matrix thead th[data-sort='local-smollm2']")
    tokens = page.eval_on_selector_all(
        "#matrix tbody tr", "rows => rows.map(r => r.children[3].querySelector('.facts span:nth-child(2)'))"
        ".map(s => s ? parseInt(s.textContent.replace(/,/g, '')) : null).filter(v => v !== null)")
    assert tokens == sorted(tokens, reverse=True) and len(tokens) > 5

    page.locator(".thread-link", has_text="capital-followup").first.click()
    page.select_option("#thread-provider", "local-smollm2")
    thread = page.locator("#thread")
    assert thread.locator(".turn").count() == 3
    text = thread.inner_text()
    assert "concise geography tutor" in text  # the system prompt, as sent
    assert "The capital of France is Paris." in text  # the dataset's reply sent back at turn 2
    assert "the dataset's reply" in text.lower()
    assert "Lyon" in text and "changed against the baseline" in text
    shot("4-thread")

    page.click("#tab-changes")
    assert page.locator(".change").count() == 2
    assert "Lyon" in " ".join(page.locator(".change ins").all_inner_texts())
    assert page.locator(".change del").count() >= 1
    shot("5-diff")

    page.click("#tab-usage")
    headers = page.locator("#usage thead th").all_inner_texts()
    assert {"provider", "turns", "output_tokens", "latency_p50_ms"} <= set(headers)
    page.click("#tab-charts")
    assert page.locator("#chart-latency path").count() == len(DEMO)
    assert page.locator("#chart-finish rect").count() >= 5
    shot("6-charts")

    page.select_option("#run-switch", "1")
    page.click("#tab-matrix")
    assert page.locator("td.changed").count() == 0  # the baseline run against itself
    assert requested == [url] and not errors
    assert all((tmp_path / f"{n}.png").stat().st_size > 0 for n in
               ("1-matrix", "2-search", "3-filters", "4-thread", "5-diff", "6-charts"))


def test_notebook_charts_survive_a_run_without_token_counts(runs):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from harness import report

    frame = results.load(runs["base"])
    frame["output_tokens"] = pd.array([None] * len(frame), dtype="Int64")
    ax = report.plot_tokens(frame, ax=Figure().subplots())
    assert "no row has output tokens" in [t.get_text() for t in ax.texts]
    assert report.plot_latency(frame, ax=Figure().subplots()).get_title() == "Latency"


def test_columns_other_steps_add_reach_the_page(runs):
    from harness.view import html_page

    frame = results.load(runs["base"])
    frame["cost_usd"] = pd.array([0.001] * len(frame), dtype="Float64")  # a base column now
    frame["score_exact"] = pd.array([1.0, None] * (len(frame) // 2), dtype="Float64")
    page = runs["folder"] / "extra.html"
    page.write_text(html_page([("with cost", frame)]), encoding="utf-8")
    run = _data(page)["runs"][0]
    assert run["extra"] == ["cost_usd", "score_exact"]
    assert run["rows"]["cost_usd"][0] == 0.001 and run["rows"]["score_exact"][1] is None


def test_the_thread_of_a_self_history_run_holds_the_providers_own_replies(tmp_path):
    from conftest import SMALL_RECORDS, stub_providers

    from harness import replay
    from harness.stub_server import StubServer
    from harness.view import run_data

    dataset = tmp_path / "small.jsonl"
    dataset.write_text("\n".join(json.dumps(r) for r in SMALL_RECORDS) + "\n", encoding="utf-8")
    with StubServer() as stub:
        frame = replay(dataset, stub_providers(stub.base_url)[:2], history="self",
                       record_mode="all", cassette_dir=tmp_path / "c", progress=False)
    sent = run_data(frame, "self")["threads"]["c1"]["stub-openai"]
    own = frame[(frame["conversation_id"] == "c1") & (frame["provider"] == "stub-openai")]
    assert sent["cuts"] == [2, 4]
    assert sent["messages"][2] == ["assistant", own["response"].iloc[0], "own"]  # not "Paris."
    assert sent["messages"][3] == ["user", "And its river?", "dataset"]


@pytest.fixture(scope="module")
def judged(runs) -> dict[str, Path]:
    """The demo scored, and judged offline from the shipped judge cassettes (a verdict table
    beside the scored file), then viewed twice."""
    folder = runs["folder"]
    scored = folder / "scored.parquet"
    proc = run_cli("score", str(runs["base"]), "-s", "exact", "-s", "similarity", "--judge",
                   "local-smollm2", "--judged", "local-smollm2", "--conversation", "science-why",
                   "--pairwise", "local-smollm2,local-gemma3", "--judge-max-tokens", "64",
                   "--dataset", "demo", "--out", str(scored))
    assert proc.returncode == 0, proc.stderr
    pages = []
    for name in ("sig-1.html", "sig-2.html"):
        proc = run_cli("view", str(scored), "--out", str(folder / name))
        assert proc.returncode == 0, proc.stderr
        pages.append(folder / name)
    return {"scored": scored, "verdicts": folder / "scored.pairwise-local-smollm2-local-gemma3.parquet",
            "page": pages[0], "again": pages[1]}


def test_the_significance_section_is_computed_at_build_time_and_reproducible(judged):
    from harness import significance

    assert judged["page"].read_bytes() == judged["again"].read_bytes()  # seeded: byte for byte
    frame = results.load(judged["scored"])
    sig = _data(judged["page"])["runs"][0]["significance"]
    metrics = [m["metric"] for m in sig["metrics"]]
    assert metrics == significance.default_metrics(frame)
    assert "similarity" in metrics and "latency_ms" in metrics
    assert "cost_usd" not in metrics  # every demo provider runs on this machine: $0 each
    similarity = sig["metrics"][metrics.index("similarity")]
    cli = significance.significance(frame, "similarity", seed=0)  # what compare --metric prints
    assert [text for text, _ in similarity["sentences"]] == list(cli["pairs"]["sentence"])
    pairs = len(DEMO) * (len(DEMO) - 1) // 2
    assert len(similarity["pairs"]["rows"]) == len(similarity["sentences"]) == pairs
    assert similarity["strengths"] is not None and len(similarity["providers"]["rows"]) == len(DEMO)
    latency = sig["metrics"][metrics.index("latency_ms")]
    assert latency["better"] == "lower"
    assert any("(lower is better)" in text for text, _ in latency["sentences"])
    (judge_table,) = sig["verdicts"]
    assert judge_table["file"] == judged["verdicts"].name and judge_table["judge"] == "local-smollm2"
    expected = significance.win_rates(pd.read_parquet(judged["verdicts"]))["sentence"].iloc[0]
    assert judge_table["sentences"][0][0] == expected


def test_the_significance_sentences_are_visible_in_a_real_browser(judged, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
    page.goto(judged["page"].as_uri())
    page.wait_for_selector("body[data-ready='1']")
    page.click("#tab-significance")
    sig = _data(judged["page"])["runs"][0]["significance"]
    similarity = next(m for m in sig["metrics"] if m["metric"] == "similarity")
    page.select_option("#sig-metric", "similarity")
    shown = page.locator(".sig-sentence").filter(has_text=similarity["sentences"][0][0])
    detected = [text for text, found in similarity["sentences"] if found]
    first = page.locator("ul.detected .sig-sentence").first if detected else shown
    assert first.is_visible()
    assert "on similarity" in first.inner_text()
    assert page.locator("#sig-pairs tbody tr").count() == len(similarity["pairs"]["rows"])
    assert page.locator("#sig-strengths tbody tr").count() == len(DEMO)
    page.select_option("#sig-metric", "latency_ms")
    assert "lower is better" in page.inner_text("#significance h2")
    page.select_option("#sig-metric", "winner")
    verdict = page.locator(".sig-sentence").first
    assert verdict.is_visible() and verdict.inner_text() == sig["verdicts"][0]["sentences"][0][0]
    assert page.locator("#sig-wins-0 tbody tr").count() == 1
    assert not errors
