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

from .results import COLUMNS
from .scores import SCORERS

KEY = ["conversation_id", "turn"]
_BLOCK = 256  # bootstrap replicates drawn at once: bounded memory on 100k-row frames

# which way is better, for the columns harness writes; anything else (scores) is "higher"
LOWER_IS_BETTER = frozenset({"latency_ms", "e2e_ms", "ttfb_ms", "ttft_ms", "ttfc_ms", "itl_ms",
                             "cost_usd", "attempts"})
NEUTRAL = frozenset({"input_tokens", "output_tokens", "total_tokens", "reasoning_tokens",
                     "cached_input_tokens", "cache_write_input_tokens", "billed_input_tokens",
                     "billed_output_tokens"})  # more is neither better nor worse
# what the view and the report test when the results carry them (scores always)
DEFAULT_METRICS = ("latency_ms", "ttft_ms", "output_tokens", "cost_usd")


def direction(metric: str) -> str:
    """`higher` (scores, judge ratings), `lower` (latency, cost) or `neutral` (token counts)."""
    return "lower" if metric in LOWER_IS_BETTER else "neutral" if metric in NEUTRAL else "higher"


def score_columns(results: pd.DataFrame) -> list[str]:
    """The score columns of `results`: scorers', `judge_<name>` ratings, `tool_call_match`."""
    return [c for c in results.columns
            if (c in SCORERS or c.startswith("judge_") or c == "tool_call_match"
                or (c not in COLUMNS and pd.api.types.is_numeric_dtype(results[c])))
            and results[c].notna().any()]


def default_metrics(results: pd.DataFrame) -> list[str]:
    """What is worth testing in `results`: every score column, then latency, time to first
    token, output tokens and cost where two providers have values and they are not one value
    for every row."""
    wanted = score_columns(results) + [c for c in DEFAULT_METRICS if c in results.columns]
    return [c for c in dict.fromkeys(wanted) if results[c].dropna().nunique() > 1
            and results.loc[results[c].notna(), "provider"].nunique() > 1]


def _conversation_codes(conversations: pd.Series) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(conversations, sort=False)
    return codes, len(uniques)


def _bootstrap_ratios(sums: np.ndarray, counts: np.ndarray, n_boot: int,
                      rng: np.random.Generator, confidence: float) -> np.ndarray:
    """Percentile intervals (2 x series) of each column's sum/count, over the same
    conversations (rows) drawn with replacement for every series: one draw serves every
    provider and pair, as a weight matrix times the per-conversation sums."""
    n, m = sums.shape
    estimates = np.empty((n_boot, m))
    for start in range(0, n_boot, _BLOCK):
        size = min(_BLOCK, n_boot - start)
        draw = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        weights = np.bincount(draw.ravel(), minlength=size * n).reshape(size, n).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            estimates[start:start + size] = (weights @ sums) / (weights @ counts)
    alpha = (1 - confidence) / 2
    out = np.full((2, m), math.nan)
    seen = np.isfinite(estimates).any(axis=0)  # a series with no value has no interval
    if seen.any():
        out[:, seen] = np.nanquantile(estimates[:, seen], [alpha, 1 - alpha], axis=0)
    return out


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
    values = results[metric]
    known = SCORERS.get(metric)  # JSONL reads pass/fail scores back as 1.0 / 0.0
    pass_fail = pd.api.types.is_bool_dtype(values.dtype) or bool(known and known.pass_fail)
    if not pass_fail and not pd.api.types.is_numeric_dtype(values.dtype):
        raise ValueError(f"column {metric!r} holds {values.dtype} values, not a score "
                         "(expected numbers or pass/fail)")
    numeric = pd.to_numeric(values.astype("Float64" if pass_fail else values.dtype),
                            errors="coerce").astype(float)
    if not numeric.notna().any():
        raise ValueError(f"column {metric!r} has no value in any row (expected scores: "
                         "harness score fills it)")
    frame = results[KEY + ["provider"]].assign(value=numeric.to_numpy())
    wide = frame.pivot_table(index=KEY, columns="provider", values="value", aggfunc="first",
                             dropna=False, sort=False)
    order = [p for p in pd.unique(results["provider"].to_numpy()) if p in wide.columns]
    return wide[order], pass_fail


def _fmt(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _sentence(a: str, b: str, metric: str, diff: float, low: float, high: float,
              conversations: int, p_value: float | None, better: str = "higher") -> str:
    test = f", McNemar p = {p_value:.3g}" if p_value is not None else ""
    if low > 0 or high < 0:
        top, bottom, d, lo, hi = (b, a, diff, low, high) if diff > 0 else (a, b, -diff, -high, -low)
        if better == "neutral":
            claim = f"{top} is higher than {bottom} on {metric} by"
        elif better == "lower":
            claim = f"{bottom} beats {top} on {metric} (lower is better) by"
        else:
            claim = f"{top} beats {bottom} on {metric} by"
        return f"{claim} {_fmt(d)} [{_fmt(lo)}, {_fmt(hi)}], {conversations} conversations{test}"
    return (f"no detectable difference between {a} and {b} on {metric}: {b} - {a} = "
            f"{_fmt(diff)} [{_fmt(low)}, {_fmt(high)}], {conversations} conversations{test}")


def significance(results: pd.DataFrame, metric: str, *, n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95, better: str | None = None,
                 bt_boot: int = 500) -> dict[str, pd.DataFrame]:
    """Per provider, per pair and (three or more providers) Bradley-Terry tables on `metric`.

    - `providers`: mean with its bootstrap interval (resampling conversations)
    - `pairs`: the paired difference b - a (on turns both answered) with its bootstrap
      interval, McNemar's exact p for pass/fail metrics, and a `sentence` to act on
    - `strengths`: Bradley-Terry strengths (summing to 1) from per-turn wins, with intervals
      (`bt_boot` resamples); not for a `neutral` metric, where no value wins

    `better` is `higher`, `lower` or `neutral`; by default `direction(metric)`.
    """
    better = better or direction(metric)
    if better not in ("higher", "lower", "neutral"):
        raise ValueError(f"better={better!r}: expected higher, lower or neutral")
    wide, pass_fail = _wide(results, metric)
    rng = np.random.default_rng(seed)
    conversations = wide.index.get_level_values("conversation_id")
    codes, n = _conversation_codes(conversations)
    series = [(p, wide[p].to_numpy()) for p in wide.columns]
    pairs_of = list(itertools.combinations(wide.columns, 2))
    series += [((a, b), wide[b].to_numpy() - wide[a].to_numpy()) for a, b in pairs_of]
    sums, counts = np.zeros((n, len(series))), np.zeros((n, len(series)))
    for j, (_, values) in enumerate(series):
        keep = ~np.isnan(values)
        sums[:, j], counts[:, j] = _per_conversation(values[keep], codes[keep], n)
    bounds = (_bootstrap_ratios(sums, counts, n_boot, rng, confidence) if n
              else np.full((2, len(series)), math.nan))
    seen = (counts > 0).sum(axis=0)  # conversations with a value, per series

    rows = []
    for j, (provider, values) in enumerate(series[:wide.shape[1]]):
        keep = ~np.isnan(values)
        rows.append({"provider": provider, "mean": values[keep].mean() if keep.any() else math.nan,
                     "low": bounds[0, j], "high": bounds[1, j], "conversations": int(seen[j]),
                     "turns": int(keep.sum())})
    per_provider = pd.DataFrame(rows).set_index("provider")

    pairs = []
    for j, ((a, b), diff) in enumerate(series[wide.shape[1]:], start=wide.shape[1]):
        x, y = wide[a].to_numpy(), wide[b].to_numpy()
        keep = ~np.isnan(diff)
        count = int(seen[j])
        mean = float(diff[keep].mean()) if keep.any() else math.nan
        low, high = float(bounds[0, j]), float(bounds[1, j])
        row = {"a": a, "b": b, "diff": mean, "low": low, "high": high, "conversations": count,
               "turns": int(keep.sum())}
        p_value = None
        if pass_fail:
            only_a = int(((x[keep] == 1) & (y[keep] == 0)).sum())
            only_b = int(((x[keep] == 0) & (y[keep] == 1)).sum())
            p_value = mcnemar(only_a, only_b)
            row.update(only_a=only_a, only_b=only_b, mcnemar_p=p_value)
        row["sentence"] = (_sentence(a, b, metric, mean, low, high, count, p_value, better)
                           if count else f"{a} and {b} answered no turn in common with a {metric}")
        pairs.append(row)
    out = {"providers": per_provider, "pairs": pd.DataFrame(pairs)}
    if wide.shape[1] >= 3 and better != "neutral":
        out["strengths"] = bradley_terry(-wide if better == "lower" else wide, conversations,
                                         n_boot=min(n_boot, bt_boot), rng=rng,
                                         confidence=confidence)
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
    """Bradley-Terry strengths by Hunter's MM algorithm, normalized to sum to 1: of one win
    matrix (k x k), or of many at once (B x k x k, every bootstrap replicate in one array)."""
    k = wins.shape[-1]
    wins = wins + 0.1 * (1 - np.eye(k))  # a tenth of a win each way keeps a winless one finite
    games = wins + np.swapaxes(wins, -1, -2)
    total = wins.sum(axis=-1)
    strength = np.broadcast_to(np.ones(k) / k if start is None else start, total.shape)
    for _ in range(iterations):
        new = total / (games / (strength[..., :, None] + strength[..., None, :])).sum(axis=-1)
        new /= new.sum(axis=-1, keepdims=True)
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
    resampled = []
    for start in range(0, n_boot, _BLOCK):  # conversations drawn with replacement, as weights
        size = min(_BLOCK, n_boot - start)
        draw = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        weights = np.bincount(draw.ravel(), minlength=size * n).reshape(size, n)
        resampled.append(np.tensordot(weights, per_conversation, axes=1))
    draws = _fit(np.concatenate(resampled), strength)
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
        ties, inconsistent = int((winner == "tie").sum()), int((winner == "inconsistent").sum())
        errors = int((winner == "error").sum())
        rest = (f"of {_count(len(group), 'judged turn')} {ties} tied, {inconsistent} inconsistent"
                + (f", {errors} unparsable" if errors else "")
                + f"; {_count(conversations, 'conversation')}")
        if decisive and (low > 0.5 or high < 0.5):
            lead, other, r, lo, hi = ((a, b, rate, low, high) if rate > 0.5 else
                                      (b, a, 1 - rate, 1 - high, 1 - low))
            sentence = (f"{lead} wins {r:.0%} [{lo:.0%}, {hi:.0%}] of {decisive} decisive "
                        f"turns against {other}; {rest}")
        elif decisive:
            sentence = (f"no detectable preference between {a} and {b}: {a} wins {a_wins} of "
                        f"{decisive} decisive turns [{low:.0%}, {high:.0%}]; {rest}")
        else:
            sentence = f"no preference between {a} and {b}: no turn was decisive; {rest}"
        rows.append({"a": a, "b": b, "judged": len(group), "a_wins": a_wins, "b_wins": b_wins,
                     "ties": ties, "inconsistent": inconsistent, "errors": errors,
                     "a_win_rate": rate, "low": low, "high": high,
                     "conversations": conversations, "sentence": sentence})
    return pd.DataFrame(rows, columns=WIN_COLUMNS)


WIN_COLUMNS = ["a", "b", "judged", "a_wins", "b_wins", "ties", "inconsistent", "errors",
               "a_win_rate", "low", "high", "conversations", "sentence"]
