"""`compare.diff` at scale: the row-by-row version it replaced against the vectorized one.

    python bench/diff_scale.py [--rows 52000 500000] [--skip-before-above N]

Two results frames of ROWS rows (1% of replies and 0.5% of token counts changed); prints
seconds for each and the ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from harness import compare
from harness.results import COLUMNS, SORT_KEY, normalize


def diff_before(baseline: pd.DataFrame, current: pd.DataFrame,
                columns: tuple[str, ...] = compare.DIFF_COLUMNS) -> pd.DataFrame:
    """The iterrows implementation `diff` had before (kept here to measure against)."""
    merged = baseline.merge(current, on=SORT_KEY, how="outer", suffixes=("_before", "_after"),
                            indicator=True)
    changes = []
    for _, row in merged.iterrows():
        if row["_merge"] == "left_only":
            what = ["removed"]
        elif row["_merge"] == "right_only":
            what = ["added"]
        else:
            what = [c for c in columns if not compare._same(row[f"{c}_before"], row[f"{c}_after"])]
        if what:
            changes.append({**{k: row[k] for k in SORT_KEY}, "change": ", ".join(what),
                            **{f"{c}_{s}": row[f"{c}_{s}"] for c in columns
                               for s in ("before", "after")}})
    out = [*SORT_KEY, "change", *(f"{c}_{s}" for c in columns for s in ("before", "after"))]
    return pd.DataFrame(changes, columns=out).sort_values(SORT_KEY, kind="stable").reset_index(
        drop=True)


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    providers = np.array(["p1", "p2", "p3", "p4", "p5"])
    turns = rows // len(providers)
    conv = np.repeat([f"c{i // 4:06d}" for i in range(turns)], len(providers))
    frame = pd.DataFrame({c: None for c in COLUMNS}, index=range(turns * len(providers)))
    frame["conversation_id"] = conv
    frame["turn"] = np.repeat(np.arange(turns) % 4 + 1, len(providers))
    frame["provider"] = np.tile(providers, turns)
    frame["response"] = [f"reply number {i} with a few words in it" for i in range(len(frame))]
    frame["finish_reason"] = "stop"
    frame["status"] = "ok"
    frame["input_tokens"] = rng.integers(10, 500, len(frame))
    frame["output_tokens"] = rng.integers(1, 300, len(frame))
    frame["prompt"] = ""
    frame["attempts"] = 1
    base = normalize(frame)
    current = base.copy()
    n = len(current)
    current.loc[rng.choice(n, n // 100, replace=False), "response"] = "something else"
    picks = rng.choice(n, n // 200, replace=False)
    current.loc[picks, "output_tokens"] = current.loc[picks, "output_tokens"] + 1
    return base, current


def timed(fn, *args) -> tuple[float, pd.DataFrame]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[52_000, 500_000])
    parser.add_argument("--skip-before-above", type=int, default=10**9,
                        help="do not run the slow version above this many rows")
    args = parser.parse_args()
    print(f"{'rows':>9} {'changed':>8} {'before s':>9} {'after s':>8} {'before/after':>13}")
    for rows in args.rows:
        base, current = frames(rows)
        after_s, after = timed(compare.diff, base, current)
        if rows <= args.skip_before_above:
            before_s, before = timed(diff_before, base, current)
            assert list(before["change"]) == list(after["change"]), "the two versions disagree"
            ratio = f"{before_s / after_s:12.1f}x"
            before_text = f"{before_s:9.2f}"
        else:
            before_text, ratio = f"{'-':>9}", f"{'-':>13}"
        print(f"{rows:>9} {len(after):>8} {before_text} {after_s:8.3f} {ratio}")


if __name__ == "__main__":
    main()
