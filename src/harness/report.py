"""Matplotlib charts of a results table for notebooks (needs matplotlib, in the `dev` extra).

The HTML page is `harness.view`; `html_report`/`write_html` stay as its one-run form.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import compare
from .results import providers as provider_order


def _axes(ax, rows: int):
    if ax is None:
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("charts need matplotlib: pip install 'harness[dev]' "
                              "(or use `harness view` for charts in the browser)") from None

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
    providers = provider_order(ok)
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


def html_report(results: pd.DataFrame, title: str = "harness report",
                baseline: pd.DataFrame | None = None) -> str:
    """The page of `harness view` for one run: `report` is folded into it."""
    from .view import html_page

    return html_page([(str(results.attrs.get("path", "results")), results)], baseline, title)


def write_html(results: pd.DataFrame, path: str | Path, title: str = "harness report",
               baseline: pd.DataFrame | None = None) -> Path:
    """Write `html_report` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(results, title, baseline), encoding="utf-8")
    return path
