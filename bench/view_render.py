"""`harness view` page weight and time to first render, in headless Chromium.

    python bench/view_render.py [--turns 10000] [--providers 5] [--scores] [--screenshots docs/]

Measures the demo (replayed offline from the shipped cassettes, against a baseline with two
changed rows) and a synthetic run of TURNS turns x PROVIDERS providers. Time to first render
is from navigation start to the end of the page's first render (a performance mark), and
to first contentful paint. With --screenshots, saves the demo's matrix, thread and diff at
1400 px wide. `sig CPU` is the CPU seconds the page's Significance section costs alone (part
of `build s`), `heap MB` the page's JS heap; --scores adds the `exact` and `similarity`
scores to the synthetic run first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def demo(folder: Path) -> tuple[list, object]:
    from harness import replay, results

    frame = replay(ROOT / "datasets" / "demo.jsonl", providers_file=ROOT / "harness.toml",
                   cassette_dir=ROOT / "cassettes", progress=False)
    results.save(frame, folder / "demo.parquet")
    frame = results.load(folder / "demo.parquet")
    baseline = frame.copy()
    baseline.attrs["path"] = "a baseline in which two of SmolLM2's rows differ"
    smol = baseline.index[baseline["provider"] == "local-smollm2"]
    baseline.loc[smol[0], "response"] = "Paris is the capital of France, on the Seine."
    baseline.loc[smol[3], ["finish_reason", "output_tokens"]] = ["length", 128]
    return [("demo (from cassettes)", frame)], baseline


def synthetic(folder: Path, turns: int, providers: int) -> tuple[list, object]:
    import numpy as np

    from harness import results
    from harness.results import TurnResult

    rng = np.random.default_rng(0)
    per = 5
    records, rows = [], []
    words = ["the", "a", "river", "capital", "story", "model", "reply", "answer", "token",
             "city", "light", "road"]
    for c in range(turns // per):
        messages = [{"role": "system", "content": "Be brief."}]
        for t in range(1, per + 1):
            prompt = f"Question {t} of conversation {c}: " + " ".join(rng.choice(words, 12))
            reference = " ".join(rng.choice(words, 30))
            messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": reference}]
            for p in range(providers):
                n = int(rng.integers(5, 120))
                rows.append(TurnResult(
                    conversation_id=f"conv-{c:05d}", turn=t, provider=f"provider-{p}", model=f"m{p}",
                    prompt=prompt, reference=reference, response=" ".join(rng.choice(words, n)),
                    finish_reason="length" if n > 110 else "stop", input_tokens=int(rng.integers(20, 900)),
                    output_tokens=n, latency_ms=float(rng.gamma(2, 300)), attempts=1))
        records.append({"id": f"conv-{c:05d}", "messages": messages})
    dataset = folder / "synthetic.jsonl"
    dataset.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    frame = results.to_frame(rows)
    frame.attrs["run"] = {"dataset": "synthetic", "dataset_path": str(dataset), "history": "reference",
                          "record_mode": "none", "params": {}, "providers": []}
    baseline = frame.copy()
    baseline.loc[rng.choice(len(frame), len(frame) // 100, replace=False), "response"] = "old reply"
    return [("synthetic", frame)], baseline


def measure(browser, path: Path, shots: Path | None = None) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    outside: list[str] = []
    page.route("**/*", lambda r: (r.continue_() if r.request.url.startswith("file:")
                                  else (outside.append(r.request.url), r.abort())))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    timing = page.evaluate("""() => ({
        rendered: performance.getEntriesByName('harness-rendered')[0].startTime,
        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime ?? null})""")
    heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "view-matrix.png"))
        page.locator(".thread-link", has_text="capital-followup").first.click()
        page.select_option("#thread-provider", "local-smollm2")
        page.screenshot(path=str(shots / "view-thread.png"))
        page.click("#tab-changes")
        page.screenshot(path=str(shots / "view-diff.png"))
    page.close()
    return {**timing, "heap_mb": heap / 2**20 if heap else None, "outside": outside}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--providers", type=int, default=5)
    parser.add_argument("--screenshots", type=Path)
    parser.add_argument("--scores", action="store_true",
                        help="score the synthetic run (exact, similarity) before building its page")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from harness import scores
    from harness.view import significance_data, write_view

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        folder = Path(tmp)
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        print(f"{'page':<18} {'rows':>7} {'build s':>7} {'sig CPU':>7} {'MB':>6} "
              f"{'render ms':>9} {'FCP ms':>7} {'heap MB':>7}")
        big = synthetic(folder, args.turns, args.providers)
        if args.scores:
            big = ([(name, scores.score(frame, ["exact", "similarity"])) for name, frame in big[0]],
                   big[1])
        for label, (runs, baseline), shots in (
                ("demo", demo(folder), args.screenshots),
                (f"{args.turns} turns x {args.providers}", big, None)):
            started = time.perf_counter()
            path = write_view(runs, folder / f"{label.split()[0]}.html", baseline=baseline)
            build = time.perf_counter() - started
            cpu = time.process_time()
            significance_data(runs[0][1])
            sig = time.process_time() - cpu
            best = min((measure(browser, path, shots if k == 0 else None) for k in range(3)),
                       key=lambda m: m["rendered"])
            assert not best["outside"], best["outside"]
            fcp = f"{best['fcp']:7.0f}" if best["fcp"] is not None else f"{'-':>7}"
            heap = f"{best['heap_mb']:7.1f}" if best["heap_mb"] else f"{'-':>7}"
            print(f"{label:<18} {len(runs[0][1]):>7} {build:7.2f} {sig:7.2f} "
                  f"{path.stat().st_size / 2**20:6.2f} "
                  f"{best['rendered']:9.0f} {fcp} {heap}")
        browser.close()


if __name__ == "__main__":
    main()
