"""Cost in dollars of each results row, priced from its usage columns with genai-prices.

The usage columns mean the same for every provider: `input_tokens` is every prompt token
(uncached + cache reads + cache writes), `cached_input_tokens` the cache reads,
`cache_write_input_tokens` the cache writes, `output_tokens` every generated token
(reasoning included). Each part is priced at its own rate. genai-prices ships its price
data in the package, so pricing never touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import version
from urllib.parse import urlsplit

import pandas as pd

from .providers import PRESETS, Provider

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")
USAGE_PARTS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens")


@dataclass(frozen=True)
class Pricing:
    """How one (provider, model) is priced: `source` names where the rates came from."""

    source: str  # "genai-prices" | "harness.toml" | "local" | "unpriced"
    model: str | None = None  # the model genai-prices matched, or the one without a price
    rates: Mapping[str, float] | None = None  # $ per million tokens, for harness.toml prices
    reason: str = ""


def is_local(provider: Provider) -> bool:
    """A model running on this machine: a `local-*` preset or any server on loopback."""
    preset = provider.name.startswith("local") and provider.name in PRESETS
    return preset or urlsplit(provider.base_url).hostname in LOCAL_HOSTS


def pricing(provider: Provider | None, model: str | None) -> Pricing:
    """How rows of `provider` reporting `model` are priced (its configured model if none)."""
    if provider is not None and provider.prices:
        return Pricing("harness.toml", model, provider.prices)
    if provider is not None and is_local(provider):
        return Pricing("local", model, reason="runs on this machine, priced at $0")
    # the configured model only when none was reported: a reported model without a price is
    # another model than the configured one, and pricing it as that would be a wrong number
    model = model or (provider.model if provider is not None else None)
    api_url = provider.base_url if provider is not None else None
    if model:
        import genai_prices  # here: its price tables take seconds to import, and a replay of
        # local models (or `harness --help`) never needs them

        try:
            genai_prices.calc_price(genai_prices.Usage(input_tokens=0), model,
                                    provider_api_url=api_url)
        except LookupError:
            pass
        else:
            return Pricing("genai-prices", model)
    name = provider.name if provider is not None else "this provider"
    return Pricing("unpriced", model, reason=(
        f"genai-prices {version('genai-prices')} has no price for model {model!r}; set "
        f"prices = {{input_per_mtok = ..., output_per_mtok = ...}} in [providers.{name}] "
        "of harness.toml"))


def _usage(frame: pd.DataFrame) -> pd.DataFrame:
    parts = pd.DataFrame(index=frame.index)
    for column in USAGE_PARTS:
        values = frame[column] if column in frame else pd.Series(pd.NA, index=frame.index)
        parts[column] = values.astype("Int64")
    for column in ("cached_input_tokens", "cache_write_input_tokens"):
        parts[column] = parts[column].fillna(0)
    return parts


def _priced(parts: pd.DataFrame, how: Pricing, api_url: str | None) -> pd.Series:
    """Dollars per row of `parts` (rows without input or output counts stay NA)."""
    out = pd.Series(pd.NA, index=parts.index, dtype="Float64")
    known = parts["input_tokens"].notna() & parts["output_tokens"].notna()
    if how.source == "local":
        out[known] = 0.0
        return out
    if how.source == "genai-prices":
        import genai_prices

        calc = genai_prices.calc_price(genai_prices.Usage(input_tokens=0), how.model,
                                       provider_api_url=api_url)
        price = calc.model_price
        rates = _flat_rates(price)
        if rates is None:  # tiered by prompt size: genai-prices prices each row itself
            return _priced_by_row(parts, known, price, out)
    elif how.source == "harness.toml":
        rates = how.rates or {}
    else:
        return out
    inp = rates["input_per_mtok"]

    def rate(name: str) -> float:
        value = rates.get(name)
        return inp if value is None else value

    uncached = parts["input_tokens"] - parts["cached_input_tokens"] - parts["cache_write_input_tokens"]
    dollars = (uncached * inp
               + parts["cached_input_tokens"] * rate("cached_input_per_mtok")
               + parts["cache_write_input_tokens"] * rate("cache_write_per_mtok")
               + parts["output_tokens"] * rates["output_per_mtok"]) / 1e6
    out[known] = dollars[known].astype("Float64")
    return out


def _flat_rates(price: object) -> dict[str, float] | None:
    """genai-prices' $/MTok for the token parts, or None when any is tiered.

    A part without its own rate (no cache price) is billed at the input rate, as
    genai-prices itself bills it.
    """
    names = {"input_per_mtok": "input_mtok", "cached_input_per_mtok": "cache_read_mtok",
             "cache_write_per_mtok": "cache_write_mtok", "output_per_mtok": "output_mtok"}
    rates = {}
    for ours, theirs in names.items():
        value = getattr(price, theirs, None)
        if value is not None and not isinstance(value, int | float | Decimal):
            return None
        rates[ours] = float(value) if value is not None else None
    if rates["input_per_mtok"] is None or rates["output_per_mtok"] is None:
        return None
    return rates


def _priced_by_row(parts: pd.DataFrame, known: pd.Series, price, out: pd.Series) -> pd.Series:
    import genai_prices

    cache: dict[tuple[int, int, int, int], float] = {}
    values = []
    for key in parts[known].astype("int64").itertuples(index=False, name=None):
        if key not in cache:  # the same usage is common: price each distinct one once
            inp, cached, write, output = key
            usage = genai_prices.Usage(input_tokens=inp, cache_read_tokens=cached,
                                       cache_write_tokens=write, output_tokens=output)
            cache[key] = float(price.calc_price(usage)["total_price"])
        values.append(cache[key])
    out[known] = pd.array(values, dtype="Float64")
    return out


def add_costs(frame: pd.DataFrame, providers: Mapping[str, Provider] | None = None) -> pd.DataFrame:
    """`frame` with `cost_usd` (nullable Float64) filled in for every row that has usage.

    `providers` maps the names in the `provider` column to their configuration (presets
    are looked up by name when absent). A model without a price stays NA, never 0.
    """
    known = {**PRESETS, **(providers or {})}
    frame = frame.copy()
    cost = pd.Series(pd.NA, index=frame.index, dtype="Float64")
    if len(frame):
        parts = _usage(frame)
        for (name, model), index in frame.groupby(["provider", "model"], sort=False, observed=True,
                                                  dropna=False).groups.items():
            provider = known.get(name)
            how = pricing(provider, None if pd.isna(model) else model)
            cost[index] = _priced(parts.loc[index], how, provider.base_url if provider else None)
    frame["cost_usd"] = cost
    return frame


def unpriced_summary(frame: pd.DataFrame, providers: Mapping[str, Provider] | None = None
                     ) -> list[str]:
    """Why any cost is $0 (one line for every local provider) or NA (one per provider, model)."""
    known = {**PRESETS, **(providers or {})}
    lines, local = [], []
    ok = frame[frame["status"] == "ok"]
    for (name, model), group in ok.groupby(["provider", "model"], sort=False, observed=True, dropna=False):
        provider = known.get(name)
        how = pricing(provider, None if pd.isna(model) else model)
        turns = len(group)
        if how.source == "local":
            local.append(name)
        elif how.source == "unpriced":
            lines.append(f"cost_usd: {name}: NA for {turns} turns: {how.reason}")
        elif "cost_usd" in group and (missing := int(group["cost_usd"].isna().sum())):
            lines.append(f"cost_usd: {name}: NA for {missing} of {turns} turns: "
                         "the provider reported no token usage")
    if local:
        lines.insert(0, f"cost_usd: $0 for {', '.join(dict.fromkeys(local))}: "
                        "they run on this machine")
    return lines


def cost_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per provider: total dollars, per answered turn and per 1k turns.

    NA when any answered turn is unpriced: a partial sum would read as the whole cost.
    """
    ok = results["status"] == "ok"
    groups = results[ok].groupby("provider", sort=False, observed=True)["cost_usd"]
    complete = groups.apply(lambda s: bool(s.notna().all()))
    total = groups.sum(min_count=1).where(complete)
    turns = groups.size()
    table = pd.DataFrame({
        "cost_usd": total,
        "cost_per_turn_usd": total / turns,
        "cost_per_1k_turns_usd": total / turns * 1000,
    })
    table = table.reindex(list(dict.fromkeys(results["provider"])))
    table.index.name = "provider"
    return table.astype("Float64")
