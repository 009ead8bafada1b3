"""Charts of a results table, and one self-contained HTML page with tables and charts."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from . import compare


def _axes(ax, rows: int):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 1 + 0.5 * max(1, rows)))
    return ax


def plot_finish_reasons(results: pd.DataFrame, ax=None):
    """Stacked bars: how each provider's turns ended."""
    table = compare.finish_reasons(results)
    ax = table.plot.barh(stacked=True, ax=_axes(ax, len(table)))
    ax.set(xlabel="turns", ylabel="", title="Finish reasons")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return ax


def plot_tokens(results: pd.DataFrame, ax=None):
    """Output tokens per turn, one box per provider."""
    ok = results[results["output_tokens"].notna()]
    providers = list(dict.fromkeys(ok["provider"]))
    ax = _axes(ax, len(providers))
    if not providers:  # every turn failed: nothing to draw, but the page is still wanted
        ax.text(0.5, 0.5, "no row has output tokens", ha="center", va="center",
                transform=ax.transAxes)
        ax.set(title="Reply length")
        return ax
    ax.boxplot([ok.loc[ok["provider"] == p, "output_tokens"].astype(float) for p in providers],
               orientation="horizontal", tick_labels=providers)
    ax.invert_yaxis()
    ax.set(xlabel="output tokens per turn", title="Reply length")
    return ax


def plot_latency(results: pd.DataFrame, ax=None):
    """Latency p50 and p95 per provider."""
    table = compare.usage(results)[["latency_p50_ms", "latency_p95_ms"]]
    ax = table.plot.barh(ax=_axes(ax, len(table)))
    ax.set(xlabel="ms", ylabel="", title="Latency")
    ax.invert_yaxis()
    return ax


def _png(plot, results: pd.DataFrame) -> str:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(7, 1 + 0.5 * results["provider"].nunique()))
    ax = plot(results, ax=figure.subplots())
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(ax.get_title())}" src="data:image/png;base64,{data}">'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td { max-width: 28rem; white-space: pre-wrap; }
.changed { background: #fff3cd; }
"""


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    return frame.to_html(index=index, na_rep="—", border=0, escape=True)


def html_report(results: pd.DataFrame, title: str = "harness report",
                baseline: pd.DataFrame | None = None) -> str:
    """The whole report as one HTML string: images are inlined, nothing is fetched."""
    sections = [
        ("Token usage and latency", _table(compare.usage(results), index=True)),
        ("Finish reasons", _table(compare.finish_reasons(results), index=True)),
        ("Charts", "".join(_png(p, results) for p in (plot_finish_reasons, plot_tokens,
                                                         plot_latency))),
    ]
    if results["reference"].notna().any():
        sections.append(("Similarity to the reference", _table(compare.similarity(results),
                                                               index=True)))
    if baseline is not None:
        changes = compare.diff(baseline, results)
        body = (_table(changes) if len(changes) else "<p>No changes against the baseline.</p>")
        sections.insert(0, (f"Changes against the baseline ({len(changes)})", body))
    sections.append(("Replies, side by side", _table(compare.side_by_side(results))))
    errors = results[results["status"] != "ok"]
    if len(errors):
        sections.append(("Errors and skipped turns", _table(errors[[
            "conversation_id", "turn", "provider", "status", "http_status", "attempts",
            "error"]])))
    body = "\n".join(f"<h2>{html.escape(name)}</h2>\n{content}" for name, content in sections)
    summary = (f"{results['conversation_id'].nunique()} conversations, "
               f"{len(results)} rows, providers: {', '.join(dict.fromkeys(results['provider']))}")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p>{html.escape(summary)}</p>\n{body}\n</body></html>\n")


def write_html(results: pd.DataFrame, path: str | Path, title: str = "harness report",
               baseline: pd.DataFrame | None = None) -> Path:
    """Write `html_report` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(results, title, baseline), encoding="utf-8")
    return path
