"""Comparison tables over a results DataFrame (see `harness.results` for its columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .costs import cost_table
from .messages import FINISH_REASONS
from .results import SORT_KEY, TOKEN_COLUMNS, apply_dtypes, by_provider, nullable, providers, unify
from .scores import DEFAULT_SCORERS, SCORERS, score

KEY = ["conversation_id", "turn"]


def side_by_side(results: pd.DataFrame, column: str = "response") -> pd.DataFrame:
    """One row per (conversation, turn): the prompt, the reference and each provider's reply."""
    results = apply_dtypes(results)
    base = results.drop_duplicates(KEY)[KEY + ["prompt", "reference"]].set_index(KEY)
    wide = results.pivot(index=KEY, columns="provider", values=column)
    order = providers(results)
    wide = wide[order].set_axis(pd.Index(order, dtype=object), axis=1)
    return nullable(base.join(wide).reset_index())


def finish_reasons(results: pd.DataFrame) -> pd.DataFrame:
    """Provider x canonical finish reason counts (skipped turns counted as `skipped`)."""
    results = apply_dtypes(results)
    skipped = results["status"].eq("skipped").to_numpy(dtype=bool)
    # a row with no reason that was not skipped (a hand-made or imported one) is `other`
    reason = results["finish_reason"].astype("string")
    reason = reason.mask(reason.isna() & skipped, "skipped").fillna("other")
    table = pd.crosstab(results["provider"].astype("string"), reason)
    present = [r for r in (*FINISH_REASONS, "skipped") if r in table.columns]
    table = table.reindex(columns=present + [c for c in table.columns if c not in present])
    table.columns = pd.Index(table.columns, dtype=object)
    return by_provider(table, results)


def usage(results: pd.DataFrame) -> pd.DataFrame:
    """Per provider: turns, errors, token sums and means, latency p50/p95, dollars; for
    streamed results also ttft/ttfb/itl/output tokens per second p50/p95 (`stream_latency`).

    `cost_usd` is the sum over answered turns, `cost_per_turn_usd` and
    `cost_per_1k_turns_usd` its mean per answered turn; NA when a model has no price.
    """
    results = apply_dtypes(results)
    groups = results.groupby("provider", sort=True, observed=True)
    status = results["status"]
    table = pd.DataFrame({"ok": status == "ok", "errors": status == "error",
                          "skipped": status == "skipped"}).groupby(results["provider"],
                                                                   observed=True).sum()
    table.insert(0, "turns", groups.size())
    for column in TOKEN_COLUMNS:
        if results[column].notna().any():
            table[column] = groups[column].sum(min_count=1)
    if "output_tokens" in table:
        table["mean_output_tokens"] = groups["output_tokens"].mean().round(1)
    latency = groups["latency_ms"]
    table["latency_p50_ms"] = latency.quantile(0.5).round(1)
    table["latency_p95_ms"] = latency.quantile(0.95).round(1)
    table = by_provider(table, results).join(stream_latency(results))
    retries = (results["attempts"].fillna(1) - 1).clip(lower=0)
    table["retries"] = retries.groupby(results["provider"], observed=True).sum()
    if "cost_usd" in results:
        table = table.join(by_provider(cost_table(results), results))
    return by_provider(table, results)


STREAM_STATS = (("ttft_ms", "ttft_{}_ms"), ("ttfb_ms", "ttfb_{}_ms"), ("itl_ms", "itl_{}_ms"),
                ("output_tokens_per_s", "output_tokens_per_s_{}"))


def stream_latency(results: pd.DataFrame) -> pd.DataFrame:
    """Per provider, p50 and p95 of time to first token and byte, inter-token latency and
    output tokens per second; no columns when no row was streamed (see harness.timings)."""
    results = apply_dtypes(results)
    if "ttft_ms" not in results or not results["ttft_ms"].notna().any():
        return by_provider(pd.DataFrame(index=pd.Index([], dtype=object)), results)
    groups = results.groupby("provider", observed=True)
    table = pd.DataFrame({name.format(f"p{round(q * 100)}"): groups[column].quantile(q).round(1)
                          for column, name in STREAM_STATS for q in (0.5, 0.95)})
    return by_provider(table, results)


def tool_calls(results: pd.DataFrame) -> pd.DataFrame:
    """Per provider, over turns whose dataset reply is a tool call: how many, how many of the
    replies called tools, and how many matched (`tool_call_match`: same names and canonical
    arguments; error rows are not scored)."""
    results = apply_dtypes(results)
    scored = results[results["reference_tool_calls"].notna()]
    table = pd.DataFrame({
        "reference_tool_calls": True,
        "replied_with_tool_calls": scored["tool_calls"].notna(),
        "tool_call_matches": scored["tool_call_match"].fillna(False).astype(bool),
    }, index=scored.index).groupby(scored["provider"], observed=True).sum()
    table["tool_call_match_rate"] = (table["tool_call_matches"]
                                     / table["reference_tool_calls"]).round(3)
    return by_provider(table, scored)


def similarity(results: pd.DataFrame) -> pd.DataFrame:
    """Mean text similarity (0..1, rapidfuzz's normalized Indel) of each provider's replies to
    the reference. difflib's ratio, used before, drops on texts over 200 characters."""
    scored = score(apply_dtypes(results), ["similarity"]).dropna(subset=["similarity"])
    out = scored.groupby("provider", observed=True)["similarity"].agg(["mean", "count"])
    out = out.rename(columns={"mean": "similarity", "count": "turns_with_reference"})
    return by_provider(out.astype({"similarity": "Float64"}).round(3), scored)


def scores(results: pd.DataFrame, scorers=DEFAULT_SCORERS) -> pd.DataFrame:
    """`results` with one column per scorer (see `harness.scores`)."""
    return score(results, scorers)


def score_table(results: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Per provider, the mean of each score column (pass/fail ones as a pass rate)."""
    columns = columns or [c for c in results.columns if c in SCORERS or c.startswith("judge_")]
    results = apply_dtypes(results)
    numeric = results[["provider", *columns]].astype({c: "Float64" for c in columns})
    table = numeric.groupby("provider", observed=True)[columns].mean().round(3)
    return by_provider(table, results)


def significance(results: pd.DataFrame, metric: str, **kwargs) -> dict[str, pd.DataFrame]:
    """Is the difference between providers on `metric` real? See `harness.significance`."""
    from .significance import significance as run

    return run(results, metric, **kwargs)


DIFF_COLUMNS = ("response", "finish_reason", "status", "input_tokens", "output_tokens")


def diff(baseline: pd.DataFrame, current: pd.DataFrame,
         columns: tuple[str, ...] = DIFF_COLUMNS, *, ignore: tuple[str, ...] = (),
         tolerance: dict[str, float] | None = None) -> pd.DataFrame:
    """Turns whose reply, finish reason, status or token counts changed between two runs.

    One row per changed (conversation, turn, provider) with `change` naming what changed
    (`added` / `removed` for rows only one side has) and the before/after values. `ignore`
    drops columns from the comparison; `tolerance` maps a numeric column (or `tokens`, for
    every `*_tokens` column) to the largest difference still counted as unchanged.
    """
    key = SORT_KEY
    baseline, current = unify(apply_dtypes(baseline), apply_dtypes(current))
    columns = tuple(c for c in columns if c not in ignore)
    limits = _tolerances(columns, tolerance or {}, baseline)
    merged = baseline[[*key, *columns]].merge(
        current[[*key, *columns]], on=key, how="outer", suffixes=("_before", "_after"),
        indicator=True)
    side = merged["_merge"].to_numpy()
    removed, added = side == "left_only", side == "right_only"
    both = ~(removed | added)
    changed = []
    for c in columns:
        before, after = merged[f"{c}_before"], merged[f"{c}_after"]
        missing_b, missing_a = before.isna().to_numpy(), after.isna().to_numpy()
        if c in limits:
            differs = ((before.astype("Float64") - after.astype("Float64")).abs() > limits[c])
        else:
            differs = before != after
        differs = differs.fillna(False).to_numpy(dtype=bool)
        changed.append(both & ((missing_b != missing_a) | (differs & ~missing_b & ~missing_a)))
    matrix = np.column_stack(changed) if changed else np.zeros((len(merged), 0), dtype=bool)
    keep = removed | added | matrix.any(axis=1)
    names = np.array(columns, dtype=object)
    change = ["removed" if removed[i] else "added" if added[i] else ", ".join(names[matrix[i]])
              for i in np.flatnonzero(keep)]  # a loop over the changed rows only
    out = merged.loc[keep, key].copy()
    out["change"] = pd.array(change, dtype="string")
    for c in columns:
        for s in ("before", "after"):
            out[f"{c}_{s}"] = merged.loc[keep, f"{c}_{s}"]
    return nullable(out.sort_values(key, kind="stable").reset_index(drop=True))


def _tolerances(columns: tuple[str, ...], tolerance: dict[str, float],
                frame: pd.DataFrame) -> dict[str, float]:
    out = {}
    for name, limit in tolerance.items():
        targets = [c for c in columns if c.endswith("_tokens")] if name == "tokens" else [name]
        for column in targets:
            numbers = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
            if column not in numbers:
                raise ValueError(f"--tolerance {name}: not a compared numeric column "
                                 f"(expected tokens or one of {', '.join(numbers)})")
            out[column] = float(limit)
    return out


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
        named = row["change"].split(", ")
        if named in (["added"], ["removed"]):
            named = [c.removesuffix("_before") for c in changes.columns if c.endswith("_before")]
        for column in named:
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


def conversation(results: pd.DataFrame, conversation_id: str,
                 providers: list[str] | None = None) -> pd.DataFrame:
    """One conversation turn by turn: the user's message, the dataset's reply, each provider's.

    One row per message (`role` is user, reference or reply; `provider` names who replied),
    so it reads top to bottom like the chat it was.
    """
    results = apply_dtypes(results)
    rows = results[results["conversation_id"] == conversation_id]
    if rows.empty:
        known = ", ".join(list(dict.fromkeys(results["conversation_id"]))[:5])
        raise KeyError(f"no conversation {conversation_id!r} in these results (e.g. {known})")
    if providers is not None:
        rows = rows[rows["provider"].isin(providers)]
    out = []
    for turn, group in rows.groupby("turn", sort=True):
        first = group.iloc[0]
        out.append({"turn": turn, "role": "user", "provider": None, "text": first["prompt"]})
        if not pd.isna(first["reference"]):
            out.append({"turn": turn, "role": "reference", "provider": None,
                        "text": first["reference"]})
        for row in group.itertuples(index=False):
            out.append({"turn": turn, "role": "reply", "provider": row.provider,
                        "text": row.response if row.status == "ok" else f"[{row.status}] {row.error}",
                        "finish_reason": row.finish_reason, "output_tokens": row.output_tokens,
                        "latency_ms": row.latency_ms})
    frame = pd.DataFrame(out, columns=["turn", "role", "provider", "text", "finish_reason",
                                       "output_tokens", "latency_ms"])
    return frame.astype({"turn": "Int64", "role": "string", "provider": results["provider"].dtype,
                         "text": "string", "finish_reason": results["finish_reason"].dtype,
                         "output_tokens": "Int64", "latency_ms": "Float64"})


def show(frame: pd.DataFrame, na: str = "—"):
    """A table for a notebook: text columns left-aligned with their line breaks, NA as `na`.

    Returns a pandas Styler (needs jinja2, in the `dev` extra), or the frame itself without it.
    """
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return frame
    text = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c])
            or frame[c].dtype == object or isinstance(frame[c].dtype, pd.CategoricalDtype)]
    return (frame.style.hide(axis="index")
            .format(na_rep=na, precision=1)
            .set_properties(subset=text, **{"text-align": "left", "white-space": "pre-wrap"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))
