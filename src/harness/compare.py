"""Comparison tables over a results DataFrame (see `harness.results` for its columns)."""

from __future__ import annotations

import pandas as pd

from .costs import cost_table
from .messages import FINISH_REASONS
from .results import SORT_KEY, TOKEN_COLUMNS
from .scores import DEFAULT_SCORERS, SCORERS, score

KEY = ["conversation_id", "turn"]


def side_by_side(results: pd.DataFrame, column: str = "response") -> pd.DataFrame:
    """One row per (conversation, turn): the prompt, the reference and each provider's reply."""
    base = results.drop_duplicates(KEY)[KEY + ["prompt", "reference"]].set_index(KEY)
    wide = results.pivot(index=KEY, columns="provider", values=column)
    wide.columns.name = None
    order = list(dict.fromkeys(results["provider"]))
    return base.join(wide[order]).reset_index()


def finish_reasons(results: pd.DataFrame) -> pd.DataFrame:
    """Provider x canonical finish reason counts (skipped turns counted as `skipped`)."""
    reason = results["finish_reason"].fillna(results["status"])
    table = pd.crosstab(results["provider"], reason)
    present = [r for r in (*FINISH_REASONS, "skipped") if r in table.columns]
    table = table.reindex(columns=present + [c for c in table.columns if c not in present])
    table.columns.name = None
    return table.reindex(list(dict.fromkeys(results["provider"])))


def usage(results: pd.DataFrame) -> pd.DataFrame:
    """Per provider: turns, errors, token sums and means, latency p50/p95, dollars.

    `cost_usd` is the sum over answered turns, `cost_per_turn_usd` and
    `cost_per_1k_turns_usd` its mean per answered turn; NA when a model has no price.
    """
    groups = results.groupby("provider", sort=False)
    table = pd.DataFrame({
        "turns": groups.size(),
        "ok": groups["status"].apply(lambda s: int((s == "ok").sum())),
        "errors": groups["status"].apply(lambda s: int((s == "error").sum())),
        "skipped": groups["status"].apply(lambda s: int((s == "skipped").sum())),
    })
    for column in TOKEN_COLUMNS:
        if results[column].notna().any():
            table[column] = groups[column].sum(min_count=1)
    if "output_tokens" in table:
        table["mean_output_tokens"] = groups["output_tokens"].mean().round(1)
    latency = groups["latency_ms"]
    table["latency_p50_ms"] = latency.quantile(0.5).round(1)
    table["latency_p95_ms"] = latency.quantile(0.95).round(1)
    table["retries"] = groups["attempts"].apply(lambda s: int((s.fillna(1) - 1).clip(lower=0).sum()))
    if "cost_usd" in results:
        table = table.join(cost_table(results))
    table.index.name = "provider"
    return table


def tool_calls(results: pd.DataFrame) -> pd.DataFrame:
    """Per provider, over turns whose dataset reply is a tool call: how many, how many of the
    replies called tools, and how many matched (`tool_call_match`: same names and canonical
    arguments; error rows are not scored)."""
    scored = results[results["reference_tool_calls"].notna()]
    groups = scored.groupby("provider", sort=False)
    table = pd.DataFrame({
        "reference_tool_calls": groups.size(),
        "replied_with_tool_calls": groups["tool_calls"].apply(lambda s: int(s.notna().sum())),
        "tool_call_matches": groups["tool_call_match"].apply(lambda s: int(s.fillna(False).sum())),
    })
    table["tool_call_match_rate"] = (table["tool_call_matches"]
                                     / table["reference_tool_calls"]).round(3)
    table.index.name = "provider"
    return table


def similarity(results: pd.DataFrame) -> pd.DataFrame:
    """Mean text similarity (0..1, rapidfuzz's normalized Indel) of each provider's replies to
    the reference. difflib's ratio, used before, drops on texts over 200 characters."""
    scored = score(results, ["similarity"]).dropna(subset=["similarity"])
    out = scored.groupby("provider", sort=False)["similarity"].agg(["mean", "count"])
    out = out.rename(columns={"mean": "similarity", "count": "turns_with_reference"})
    return out.astype({"similarity": float}).round(3)


def scores(results: pd.DataFrame, scorers=DEFAULT_SCORERS) -> pd.DataFrame:
    """`results` with one column per scorer (see `harness.scores`)."""
    return score(results, scorers)


def score_table(results: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Per provider, the mean of each score column (pass/fail ones as a pass rate)."""
    columns = columns or [c for c in results.columns if c in SCORERS or c.startswith("judge_")]
    numeric = results[["provider", *columns]].astype({c: "Float64" for c in columns})
    table = numeric.groupby("provider", sort=False)[columns].mean().round(3)
    table.index.name = "provider"
    return table


def significance(results: pd.DataFrame, metric: str, **kwargs) -> dict[str, pd.DataFrame]:
    """Is the difference between providers on `metric` real? See `harness.significance`."""
    from .significance import significance as run

    return run(results, metric, **kwargs)


DIFF_COLUMNS = ("response", "finish_reason", "status", "input_tokens", "output_tokens")


def diff(baseline: pd.DataFrame, current: pd.DataFrame,
         columns: tuple[str, ...] = DIFF_COLUMNS) -> pd.DataFrame:
    """Turns whose reply, finish reason, status or token counts changed between two runs.

    One row per changed (conversation, turn, provider) with `change` naming what changed
    (`added` / `removed` for rows only one side has) and the before/after values.
    """
    key = SORT_KEY
    merged = baseline.merge(current, on=key, how="outer", suffixes=("_before", "_after"),
                            indicator=True)
    changes = []
    for _, row in merged.iterrows():
        if row["_merge"] == "left_only":
            what = ["removed"]
        elif row["_merge"] == "right_only":
            what = ["added"]
        else:
            what = [c for c in columns if not _same(row[f"{c}_before"], row[f"{c}_after"])]
        if what:
            changes.append({
                **{k: row[k] for k in key},
                "change": ", ".join(what),
                **{f"{c}_{side}": row[f"{c}_{side}"] for c in columns
                   for side in ("before", "after")},
            })
    out_columns = [*key, "change", *(f"{c}_{s}" for c in columns for s in ("before", "after"))]
    return pd.DataFrame(changes, columns=out_columns).sort_values(key, kind="stable").reset_index(
        drop=True
    )


def _same(a, b) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    if pd.isna(a) or pd.isna(b):
        return False
    return a == b


def describe(changes: pd.DataFrame, width: int = 100) -> str:
    """A `diff` table as readable text, one block per changed row."""
    blocks = []
    for _, row in changes.iterrows():
        lines = [f"{row['conversation_id']} turn {row['turn']} {row['provider']}: {row['change']}"]
        for column in DIFF_COLUMNS:
            before, after = row[f"{column}_before"], row[f"{column}_after"]
            if not _same(before, after):
                lines.append(f"  {column}: {_short(before, width)} -> {_short(after, width)}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _short(value, width: int) -> str:
    if pd.isna(value):
        return "NA"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
