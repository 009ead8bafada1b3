"""`harness view`: one self-contained HTML page to explore one or more results files.

The page is the package's own `view_static/view.js` and `view.css` inlined next to the
runs' data as JSON: it opens from a file or a CI artifact with no network at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from . import compare, verdicts
from .datasets import Turn, conversation_turns, load_dataset
from .messages import AssistantMessage, Conversation
from .results import COLUMNS
from .results import providers as provider_order
from .significance import default_metrics, direction, win_rates

ROW_COLUMNS = ("conversation_id", "turn", "provider", "model", "prompt", "response",
               "finish_reason", "raw_finish_reason", "status", "input_tokens", "output_tokens",
               "latency_ms", "http_status", "attempts", "error")


def _value(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def _list(values: pd.Series) -> list:
    """A column as plain Python values, None for missing (through Arrow: fast at 100k rows)."""
    try:
        return pa.array(values, from_pandas=True).to_pylist()
    except (pa.ArrowException, TypeError, ValueError):
        return [_value(v) for v in values.tolist()]


def _columns(frame: pd.DataFrame, names: list[str]) -> dict[str, list]:
    return {c: _list(frame[c]) for c in names}


def _table(frame: pd.DataFrame, index: bool = True) -> dict[str, Any]:
    frame = frame.reset_index() if index else frame
    return {"columns": [str(c) for c in frame.columns],
            "rows": [[_value(v) for v in row] for row in frame.itertuples(index=False)]}


def _extra_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric columns beyond the base set (cost, scores, ...): shown wherever they exist."""
    return [c for c in frame.columns if c not in ROW_COLUMNS and pd.api.types.is_numeric_dtype(
        frame[c]) and (c not in COLUMNS or c.startswith("cost"))]


def _sent(conversation: Conversation, turns: list[Turn], history: str,
          own: dict[int, AssistantMessage]) -> dict[str, Any]:
    """The messages sent at each turn, as one list and where each turn's prompt ends."""
    from .replay import _prefix  # the engine's own rule, so the view shows what was sent

    longest: list = []
    cuts: list[int | None] = []
    for turn in turns:
        prefix = _prefix(conversation, turns, turn.turn, own, history)  # type: ignore[arg-type]
        if isinstance(prefix, int):
            cuts.append(None)
            continue
        if len(prefix) > len(longest):
            longest = prefix
        cuts.append(len(prefix))
    dataset_ids = {id(m) for m in conversation.messages}  # else the provider's own reply
    return {"messages": [[m.role, m.content, "dataset" if id(m) in dataset_ids else "own"]
                         for m in longest], "cuts": cuts}


def threads(results: pd.DataFrame, run: dict[str, Any]) -> dict[str, Any]:
    """Per conversation (and provider, outside `reference` history): the messages sent."""
    path = run.get("dataset_path")
    if not path or not Path(path).is_file():
        return {}
    try:
        dataset = load_dataset(path)
    except ValueError:
        return {}
    history = run.get("history", "auto")
    wanted = set(_list(results["conversation_id"]))
    replies: dict[tuple[str, str], dict[int, AssistantMessage]] = {}
    if history != "reference":  # the providers' own replies are part of what was sent
        ok = results[results["status"] == "ok"]
        for cid, provider, turn, text in zip(
                *(_list(ok[c]) for c in ("conversation_id", "provider", "turn", "response")),
                strict=True):
            replies.setdefault((cid, provider), {})[turn] = AssistantMessage(content=text or "")
    providers = provider_order(results)
    out: dict[str, Any] = {}
    for conversation in dataset.conversations:
        if conversation.id not in wanted:
            continue
        turns = conversation_turns(conversation)
        if history == "reference":
            out[conversation.id] = {"*": _sent(conversation, turns, history, {})}
        else:
            out[conversation.id] = {p: _sent(conversation, turns, history,
                                             replies.get((conversation.id, p), {}))
                                    for p in providers}
    return out


# bootstrap resamples per interval, as `compare --metric` draws them, so the page shows the
# numbers the CLI prints: at 10k turns x 5 providers, 3 metrics, ~1.3 s of CPU
# (bench/view_render.py --scores); 1000 and 200 would make it ~0.9 s
PAGE_BOOT = 2000
PAGE_BT_BOOT = 500


def significance_data(results: pd.DataFrame, verdict_files: Sequence[Path] = ()
                      ) -> dict[str, Any]:
    """The page's Significance section: `compare.significance` on every score column and the
    default metrics (`significance.default_metrics`), seeded, and the judge's win rates from
    each verdict table in `verdict_files`."""
    metrics = []
    for metric in default_metrics(results):
        out = compare.significance(results, metric, n_boot=PAGE_BOOT, bt_boot=PAGE_BT_BOOT, seed=0)
        pairs = out["pairs"]
        metrics.append({
            "metric": metric, "better": direction(metric),
            "providers": _table(out["providers"]),
            "pairs": _table(pairs.drop(columns="sentence"), index=False),
            "sentences": _sentences(pairs, 0.0),
            "strengths": _table(out["strengths"]) if "strengths" in out else None})
    judged = []
    for path in verdict_files:
        table = verdicts.load(path)
        rates = win_rates(table)
        judged.append({"file": Path(path).name, "judge": verdicts.judges(table),
                       "table": _table(rates.drop(columns="sentence"), index=False),
                       "sentences": _sentences(rates, 0.5)})
    return {"metrics": metrics, "verdicts": judged, "resamples": PAGE_BOOT}


def _sentences(table: pd.DataFrame, null: float) -> list[list]:
    """[sentence, whether its interval excludes `null`] per row: the page shows those first."""
    if table.empty:
        return []
    detected = ((table["low"] > null) | (table["high"] < null)).fillna(False)
    return [[text, bool(d)] for text, d in zip(_list(table["sentence"]), detected, strict=True)]


def run_data(results: pd.DataFrame, name: str, baseline: pd.DataFrame | None = None,
             verdict_files: list[Path] | None = None) -> dict:
    """Everything the page shows about one run, as plain JSON-able values. Judge verdict
    tables are `verdict_files`, else the ones `harness score --pairwise` wrote beside the
    results file."""
    run = dict(results.attrs.get("run") or {})
    if verdict_files is None:
        source = results.attrs.get("path")
        verdict_files = verdicts.beside(source) if source and Path(source).is_file() else []
    extra = _extra_columns(results)
    data: dict[str, Any] = {
        "name": name,
        "meta": run,
        "providers": provider_order(results),
        "rows": _columns(results.assign(prompt=results["prompt"].where(
            ~results.duplicated(["conversation_id", "turn"]))),  # once per turn, not per provider
            [c for c in ROW_COLUMNS if c in results.columns] + extra),
        "extra": extra,
        "usage": _table(compare.usage(results)),
        "finish": _table(compare.finish_reasons(results)),
        "threads": threads(results, run),
        "significance": significance_data(results, verdict_files),
        "changes": {},
    }
    if baseline is not None:
        changes = compare.diff(baseline, results)
        index = {key: i for i, key in enumerate(zip(
            *(_list(results[c]) for c in ("conversation_id", "turn", "provider")), strict=True))}
        removed = []
        for row in changes.itertuples(index=False):
            entry = {"change": row.change,
                     "before": {c: _value(getattr(row, f"{c}_before")) for c in compare.DIFF_COLUMNS}}
            i = index.get((row.conversation_id, row.turn, row.provider))
            if i is None:
                removed.append({"conversation_id": row.conversation_id, "turn": _value(row.turn),
                                "provider": row.provider, **entry})
            else:
                data["changes"][i] = entry
        data["removed"] = removed
        data["baseline"] = str(baseline.attrs.get("path", "baseline"))
    return data


def _asset(name: str) -> str:
    return files("harness").joinpath("view_static", name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    # "<" only occurs inside JSON strings, where \u003c means the same: no text can close
    # the <script> element or open an HTML comment in it
    return text.replace("<", "\\u003c")


def html_page(runs: list[tuple[str, pd.DataFrame]], baseline: pd.DataFrame | None = None,
              title: str = "harness view") -> str:
    """The whole page as one HTML string: script, style and data inlined, nothing fetched."""
    payload = {"title": title, "runs": [run_data(frame, name, baseline) for name, frame in runs]}
    escaped = title.replace("&", "&amp;").replace("<", "&lt;")
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escaped}</title><style>{_asset('view.css')}</style></head>\n"
            "<body><div id='app'><noscript>This page needs JavaScript.</noscript></div>\n"
            f"<script type='application/json' id='harness-data'>{_script_json(payload)}</script>\n"
            f"<script>{_asset('view.js')}</script>\n</body></html>\n")


def write_view(runs: list[tuple[str, pd.DataFrame]], path: str | Path,
               baseline: pd.DataFrame | None = None, title: str = "harness view") -> Path:
    """Write `html_page` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_page(runs, baseline, title), encoding="utf-8")
    return path
