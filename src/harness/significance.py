"""Is the difference between providers real? Intervals that respect how the data was drawn.

Turns of one conversation are correlated, so every bootstrap resamples whole conversations.
Providers answered the same turns, so pairs are compared on the paired difference (one per
conversation x turn both answered). Pass/fail metrics also get McNemar's exact test; judge
verdicts a win rate with a Wilson interval; three or more providers Bradley-Terry strengths.
Everything is seeded: the same input gives the same numbers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from .results import apply_dtypes, by_provider, nullable, providers
from .scores import SCORERS

KEY = ["conversation_id", "turn"]
_BLOCK = 256  # bootstrap replicates drawn at once: bounded memory on 100k-row frames


def _conversation_codes(conversations: pd.Series) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(conversations, sort=False)
    return codes, len(uniques)


def _bootstrap_ratio(sums: np.ndarray, counts: np.ndarray, n_boot: int,
                     rng: np.random.Generator, confidence: float) -> tuple[float, float]:
    """Percentile interval of sum/count over conversations drawn with replacement."""
    n = len(sums)
    estimates = []
    for start in range(0, n_boot, _BLOCK):
        size = min(_BLOCK, n_boot - start)
        draw = rng.integers(0, n, size=(size, n))
        total = counts[draw].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            estimates.append(sums[draw].sum(axis=1) / total)
    values = np.concatenate(estimates)
    values = values[np.isfinite(values)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def _per_conversation(values: np.ndarray, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.bincount(codes, weights=values, minlength=n),
            np.bincount(codes, minlength=n).astype(float))


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (NaN, NaN when n is 0)."""
    if n == 0:
        return math.nan, math.nan
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def mcnemar(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts (a passed only / b only)."""
    n = only_a + only_b
    return 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)


def _wide(results: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, bool]:
    if metric not in results.columns:
        raise ValueError(f"no column {metric!r} in the results (score them first: harness score)")
    results = apply_dtypes(results)
    values = results[metric]
    known = SCORERS.get(metric)  # JSONL reads pass/fail scores back as 1.0 / 0.0
    pass_fail = pd.api.types.is_bool_dtype(values.dtype) or bool(known and known.pass_fail)
    numeric = pd.to_numeric(values.astype("Float64" if pass_fail else values.dtype),
                            errors="coerce").astype(float)
    frame = results[KEY + ["provider"]].assign(value=numeric.to_numpy())
    wide = frame.pivot_table(index=KEY, columns="provider", values="value", aggfunc="first",
                             dropna=False, sort=False, observed=True)
    order = [p for p in providers(results) if p in wide.columns]
    return wide[order].set_axis(pd.Index(order, dtype=object), axis=1), pass_fail


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _sentence(a: str, b: str, metric: str, diff: float, low: float, high: float,
              conversations: int, p_value: float | None) -> str:
    test = f", McNemar p = {p_value:.3g}" if p_value is not None else ""
    if low > 0 or high < 0:
        win, lose, d, lo, hi = (b, a, diff, low, high) if diff > 0 else (a, b, -diff, -high, -low)
        return (f"{win} beats {lose} on {metric} by {_fmt(d)} [{_fmt(lo)}, {_fmt(hi)}], "
                f"{conversations} conversations{test}")
    return (f"no detectable difference between {a} and {b} on {metric}: {b} - {a} = "
            f"{_fmt(diff)} [{_fmt(low)}, {_fmt(high)}], {conversations} conversations{test}")


def significance(results: pd.DataFrame, metric: str, *, n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, pd.DataFrame]:
    """Per provider, per pair and (three or more providers) Bradley-Terry tables on `metric`.

    - `providers`: mean with its bootstrap interval (resampling conversations)
    - `pairs`: the paired difference b - a (on turns both answered) with its bootstrap
      interval, McNemar's exact p for pass/fail metrics, and a `sentence` to act on
    - `strengths`: Bradley-Terry strengths (summing to 1) from per-turn wins, with intervals
    """
    wide, pass_fail = _wide(results, metric)
    rng = np.random.default_rng(seed)
    conversations = wide.index.get_level_values("conversation_id")
    rows = []
    for provider in wide.columns:
        values = wide[provider].to_numpy()
        keep = ~np.isnan(values)
        codes, n = _conversation_codes(conversations[keep])
        sums, counts = _per_conversation(values[keep], codes, n)
        low, high = _bootstrap_ratio(sums, counts, n_boot, rng, confidence) if n else (math.nan,) * 2
        rows.append({"provider": provider, "mean": values[keep].mean() if keep.any() else math.nan,
                     "low": low, "high": high, "conversations": n, "turns": int(keep.sum())})
    per_provider = pd.DataFrame(rows).set_index("provider")

    pairs = []
    for a, b in itertools.combinations(wide.columns, 2):
        x, y = wide[a].to_numpy(), wide[b].to_numpy()
        keep = ~np.isnan(x) & ~np.isnan(y)
        codes, n = _conversation_codes(conversations[keep])
        diff = y[keep] - x[keep]
        sums, counts = _per_conversation(diff, codes, n)
        mean = float(diff.mean()) if n else math.nan
        low, high = _bootstrap_ratio(sums, counts, n_boot, rng, confidence) if n else (math.nan,) * 2
        row = {"a": a, "b": b, "diff": mean, "low": low, "high": high, "conversations": n,
               "turns": int(keep.sum())}
        p_value = None
        if pass_fail:
            only_a = int(((x[keep] == 1) & (y[keep] == 0)).sum())
            only_b = int(((x[keep] == 0) & (y[keep] == 1)).sum())
            p_value = mcnemar(only_a, only_b)
            row.update(only_a=only_a, only_b=only_b, mcnemar_p=p_value)
        row["sentence"] = (_sentence(a, b, metric, mean, low, high, n, p_value) if n else
                           f"{a} and {b} answered no turn in common with a {metric}")
        pairs.append(row)
    out = {"providers": per_provider, "pairs": pd.DataFrame(pairs)}
    if wide.shape[1] >= 3:
        out["strengths"] = bradley_terry(wide, conversations, n_boot=min(n_boot, 500), rng=rng,
                                         confidence=confidence)
    return _typed(out, apply_dtypes(results))


def _typed(tables: dict[str, pd.DataFrame], results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables on the results' dtypes: providers as the run's categorical, the rest nullable."""
    out = {}
    for name, table in tables.items():
        if table.index.name == "provider":
            order = table.index  # strengths: strongest first
            table = by_provider(table, results).loc[order.astype(object)]
        else:
            table = nullable(table).astype({c: results["provider"].dtype for c in ("a", "b")
                                            if c in table.columns})
        out[name] = table
    return out


def _wins(wide: pd.DataFrame, codes: np.ndarray, n: int) -> np.ndarray:
    """Per conversation, W[c, i, j] = turns provider i beat j (a tie counts half)."""
    k = wide.shape[1]
    values = wide.to_numpy()
    wins = np.zeros((n, k, k))
    for i, j in itertools.permutations(range(k), 2):
        both = ~np.isnan(values[:, i]) & ~np.isnan(values[:, j])
        score = (values[:, i] > values[:, j]) + 0.5 * (values[:, i] == values[:, j])
        wins[:, i, j] = np.bincount(codes[both], weights=score[both], minlength=n)
    return wins


def _fit(wins: np.ndarray, start: np.ndarray | None = None, iterations: int = 1000) -> np.ndarray:
    """Bradley-Terry strengths by Hunter's MM algorithm, normalized to sum to 1."""
    k = wins.shape[0]
    wins = wins + 0.1 * (1 - np.eye(k))  # a tenth of a win each way keeps a winless one finite
    games = wins + wins.T
    total = wins.sum(axis=1)
    strength = np.ones(k) / k if start is None else start
    for _ in range(iterations):
        new = total / (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        new /= new.sum()
        if np.abs(new - strength).max() < 1e-6:  # strengths are shown to 3 decimals
            return new
        strength = new
    return strength


def bradley_terry(wide: pd.DataFrame, conversations: pd.Index, *, n_boot: int = 500,
                  rng: np.random.Generator | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Strengths (the chance to beat an average provider, summing to 1) with bootstrap intervals."""
    rng = rng or np.random.default_rng(0)
    codes, n = _conversation_codes(conversations)
    per_conversation = _wins(wide, codes, n)
    strength = _fit(per_conversation.sum(axis=0))
    draws = np.array([_fit(np.tensordot(np.bincount(rng.integers(0, n, n), minlength=n),
                                        per_conversation, axes=1), strength)
                      for _ in range(n_boot)])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)
    table = pd.DataFrame({"strength": strength, "low": low, "high": high}, index=wide.columns)
    table.index.name = "provider"
    return table.sort_values("strength", ascending=False)


def win_rates(pairs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Judge verdicts (`harness.judge.pairwise` tables) as a's win rate over decisive turns,
    with a Wilson interval; ties, inconsistent and unparsable verdicts counted beside it."""
    rows = []
    for (a, b), group in pairs.groupby(["provider_a", "provider_b"], sort=False):
        winner = group["winner"]
        a_wins, b_wins = int((winner == a).sum()), int((winner == b).sum())
        decisive = a_wins + b_wins
        low, high = wilson(a_wins, decisive, confidence)
        rate = a_wins / decisive if decisive else math.nan
        conversations = group["conversation_id"].nunique()
        if decisive and (low > 0.5 or high < 0.5):
            lead, r, lo, hi = (a, rate, low, high) if rate > 0.5 else (b, 1 - rate, 1 - high, 1 - low)
            sentence = (f"{lead} wins {r:.0%} of decisive judged turns [{lo:.0%}, {hi:.0%}], "
                        f"{decisive} of {len(group)} turns decisive, {conversations} conversations")
        else:
            sentence = (f"no detectable preference between {a} and {b}: {a} wins "
                        f"{a_wins} of {decisive} decisive turns"
                        + (f" [{low:.0%}, {high:.0%}]" if decisive else "")
                        + f", {len(group)} turns, {conversations} conversations")
        rows.append({"a": a, "b": b, "a_wins": a_wins, "b_wins": b_wins,
                     "ties": int((winner == "tie").sum()),
                     "inconsistent": int((winner == "inconsistent").sum()),
                     "errors": int((winner == "error").sum()),
                     "a_win_rate": rate, "low": low, "high": high, "sentence": sentence})
    return nullable(pd.DataFrame(rows))
