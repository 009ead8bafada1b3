"""cost_usd: real recorded replies priced by hand from genai-prices' own rates."""

from __future__ import annotations

import genai_prices
import pandas as pd
import pytest
from conftest import shared_fixture

from harness import costs, results
from harness.cassettes import read_cassette
from harness.cli import main
from harness.foreign import detect, parse_reply
from harness.providers import PRESETS, Provider, ProviderConfigError, load_providers_file
from harness.results import TurnResult


def fixture_rows(relative: str, provider: str) -> pd.DataFrame:
    """The 200 replies of a shared fixture cassette as results rows of `provider`."""
    rows = []
    for i, item in enumerate(read_cassette(shared_fixture("cassettes", relative))):
        if item.status != 200:
            continue
        reply = parse_reply(detect(item.uri)[1], item)
        model = reply.model or (item.request_json() or {}).get("model")
        row = TurnResult.from_reply(reply, conversation_id=relative, turn=i + 1, provider=provider)
        row.model = model
        rows.append(row)
    return results.to_frame(rows)


def rates(model: str, api_url: str | None = None):
    """genai-prices' $/MTok for `model`: input, cache read, cache write, output."""
    price = genai_prices.calc_price(genai_prices.Usage(input_tokens=1), model,
                                    provider_api_url=api_url).model_price
    return price.input_mtok, price.cache_read_mtok, price.cache_write_mtok, price.output_mtok


def only(frame: pd.DataFrame, **where) -> pd.Series:
    for column, value in where.items():
        frame = frame[frame[column] == value]
    assert len(frame) == 1
    return frame.iloc[0]


@pytest.mark.parametrize("relative, provider, model, tokens", [
    ("openai/mirascope-openai_max_tokens_length.yaml", "openai", "gpt-4o-2024-08-06", (14, 50)),
    ("anthropic/mirascope-anthropic_max_tokens.yaml", "anthropic", "claude-sonnet-4-20250514",
     (15, 50)),
    ("cohere_v2/lc-cohere_invoke.yaml", "cohere", "command-r", (70, 28)),
    ("cohere_v1/langtrace-cohere_v1_chat_history.yaml", "cohere-v1", "command", (49, 69)),
    ("together/oll-together_chat_finish_eos.yaml", "together",
     "mistralai/Mixtral-8x7B-Instruct-v0.1", (18, 35)),
])
def test_one_row_per_protocol_is_tokens_times_rates(relative, provider, model, tokens):
    frame = costs.add_costs(fixture_rows(relative, provider))
    row = only(frame, model=model)
    assert (row["input_tokens"], row["output_tokens"]) == tokens
    inp, _, _, out = rates(model, PRESETS[provider].base_url)
    expected = (tokens[0] * float(inp) + tokens[1] * float(out)) / 1e6
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert row["cost_usd"] > 0


def test_gemini_row_is_priced_by_the_reported_model():
    frame = costs.add_costs(fixture_rows("gemini/mirascope-gemini_max_tokens.yaml", "gemini"))
    row = only(frame, model="gemini-2.5-flash")
    inp, _, _, out = rates("gemini-2.5-flash")
    expected = (row["input_tokens"] * float(inp) + row["output_tokens"] * float(out)) / 1e6
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-12)


def test_cache_reads_and_reasoning_are_priced_as_such():
    # groq gpt-oss-120b: 336 prompt tokens of which 256 cache reads; 96 output of which 59 reasoning
    frame = costs.add_costs(fixture_rows("groq/pai-groq_tool_use_failed_400_parsed_body.yaml", "groq"))
    row = only(frame, input_tokens=336)
    assert (row["cached_input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (256, 96, 59)
    inp, cached, _, out = rates("openai/gpt-oss-120b", PRESETS["groq"].base_url)
    assert cached < inp  # a cache read really is cheaper here, so the test can tell them apart
    expected = ((336 - 256) * float(inp) + 256 * float(cached) + 96 * float(out)) / 1e6
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-12)


def test_cache_writes_are_priced_at_their_own_rate():
    row = TurnResult(conversation_id="c", turn=1, provider="anthropic",
                     model="claude-sonnet-4-20250514", input_tokens=1000,
                     cached_input_tokens=200, output_tokens=10)
    frame = results.to_frame([row]).assign(cache_write_input_tokens=pd.array([300], dtype="Int64"))
    inp, cached, write, out = (float(r) for r in rates("claude-sonnet-4-20250514",
                                                        PRESETS["anthropic"].base_url))
    assert write > inp > cached
    expected = (500 * inp + 200 * cached + 300 * write + 10 * out) / 1e6
    assert costs.add_costs(frame)["cost_usd"].iloc[0] == pytest.approx(expected, rel=1e-12)
    without = costs.add_costs(results.to_frame([row]))["cost_usd"].iloc[0]  # column absent
    assert without == pytest.approx((800 * inp + 200 * cached + 10 * out) / 1e6, rel=1e-12)


def test_unknown_model_is_na_with_a_reason_never_zero():
    # a reasoning model genai-prices 0.2.3 does not know yet
    frame = costs.add_costs(fixture_rows("cohere_v2/lc-cohere_reasoning_tool_call_gzip.yaml",
                                         "cohere"))
    row = only(frame, model="command-a-reasoning-08-2025")
    assert (row["input_tokens"], row["cached_input_tokens"]) == (1494, 1008)
    assert pd.isna(row["cost_usd"])
    lines = costs.unpriced_summary(frame)
    assert len(lines) == 1
    assert "cohere: NA for 1 turns" in lines[0] and "'command-a-reasoning-08-2025'" in lines[0]
    assert "prices = {input_per_mtok" in lines[0]
    assert pd.isna(costs.cost_table(frame).loc["cohere", "cost_usd"])


def test_harness_toml_prices_override(tmp_path):
    toml = tmp_path / "harness.toml"
    toml.write_text('[providers.my-cohere]\npreset = "cohere-v1"\n'
                    'prices = { input_per_mtok = 2, output_per_mtok = 8, cached_input_per_mtok = 1 }\n')
    mine = load_providers_file(toml)
    frame = fixture_rows("cohere_v1/langtrace-cohere_v1_chat_history.yaml", "my-cohere")
    priced = costs.add_costs(frame, mine)
    assert priced["cost_usd"].iloc[0] == pytest.approx((49 * 2 + 69 * 8) / 1e6, rel=1e-12)
    assert costs.unpriced_summary(priced, mine) == []


@pytest.mark.parametrize("prices, message", [
    ("{ input_per_mtok = 1 }", "providers.x.prices: output_per_mtok is required"),
    ("{ input_per_mtok = 1, output_per_mtok = 2, reasoning = 3 }", "unknown price 'reasoning'"),
    ("{ input_per_mtok = -1, output_per_mtok = 2 }", "input_per_mtok must be 0 or more"),
])
def test_bad_prices_are_one_clear_error(tmp_path, prices, message):
    toml = tmp_path / "harness.toml"
    toml.write_text(f'[providers.x]\npreset = "openai"\nprices = {prices}\n')
    with pytest.raises(ProviderConfigError, match=message.replace("{", r"\{")):
        load_providers_file(toml)


def test_local_models_price_at_zero_and_say_so():
    rows = [TurnResult(conversation_id="c", turn=1, provider="local-smollm2",
                       model="smollm2-135m-instruct-q4_1", input_tokens=50, output_tokens=9),
            TurnResult(conversation_id="c", turn=1, provider="vllm", model="gpt-4o",
                       input_tokens=50, output_tokens=9)]
    vllm = Provider(name="vllm", protocol="openai", base_url="http://127.0.0.1:8000/v1",
                    model="gpt-4o")
    frame = costs.add_costs(results.to_frame(rows), {"vllm": vllm})
    assert frame["cost_usd"].tolist() == [0.0, 0.0]  # a real model name, but served on loopback
    lines = costs.unpriced_summary(frame, {"vllm": vllm})
    assert lines == ["cost_usd: $0 for local-smollm2, vllm: they run on this machine"]


def test_error_rows_stay_na_and_totals_cover_answered_turns():
    rows = [TurnResult(conversation_id="c", turn=t, provider="openai", model="gpt-4o",
                       input_tokens=1000, output_tokens=100) for t in (1, 2)]
    rows.append(TurnResult(conversation_id="c", turn=3, provider="openai", model="gpt-4o",
                           status="error", finish_reason="error", http_status=500))
    frame = costs.add_costs(results.to_frame(rows))
    assert pd.isna(frame["cost_usd"].iloc[2])
    inp, _, _, out = rates("gpt-4o", PRESETS["openai"].base_url)
    one = (1000 * float(inp) + 100 * float(out)) / 1e6
    from harness import compare

    usage = compare.usage(frame)
    assert usage.loc["openai", "cost_usd"] == pytest.approx(2 * one)
    assert usage.loc["openai", "cost_per_turn_usd"] == pytest.approx(one)
    assert usage.loc["openai", "cost_per_1k_turns_usd"] == pytest.approx(1000 * one)


def test_older_results_files_are_priced_on_load(tmp_path):
    row = TurnResult(conversation_id="c", turn=1, provider="openai", model="gpt-4o",
                     input_tokens=1000, output_tokens=100)
    old = results.to_frame([row]).drop(columns="cost_usd")
    path = tmp_path / "old.jsonl"
    old.to_json(path, orient="records", lines=True)
    loaded = results.load(path)
    inp, _, _, out = rates("gpt-4o", PRESETS["openai"].base_url)
    assert loaded["cost_usd"].iloc[0] == pytest.approx((1000 * float(inp) + 100 * float(out)) / 1e6)


def test_cli_prints_the_reason_for_an_unpriced_model(tmp_path, capsys):
    row = TurnResult(conversation_id="c", turn=1, provider="openai", model="no-such-model-x",
                     input_tokens=10, output_tokens=5)
    path = results.save(costs.add_costs(results.to_frame([row])), tmp_path / "r.parquet")
    assert main(["compare", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "cost_usd: openai: NA for 1 turns" in out and "'no-such-model-x'" in out


@pytest.mark.parametrize("model, provider", [
    ("gpt-4o", "openai"), ("command-r", "cohere"), ("claude-sonnet-4-20250514", "anthropic"),
    ("gemini-2.5-pro", "gemini"),  # tiered by prompt size: priced row by row
])
def test_every_row_matches_genai_prices_own_calculation(model, provider):
    usages = [(1000, 0, 0, 10), (300_000, 1000, 500, 700), (50, 20, 30, 5), (10, 0, 0, 0)]
    rows = [TurnResult(conversation_id="c", turn=t, provider=provider, model=model,
                       input_tokens=i, cached_input_tokens=c, output_tokens=o)
            for t, (i, c, _, o) in enumerate(usages, 1)]
    frame = results.to_frame(rows).assign(
        cache_write_input_tokens=pd.array([w for _, _, w, _ in usages], dtype="Int64"))
    got = costs.add_costs(frame)["cost_usd"].tolist()
    url = PRESETS[provider].base_url if provider in PRESETS else None
    want = [float(genai_prices.calc_price(
        genai_prices.Usage(input_tokens=i, cache_read_tokens=c, cache_write_tokens=w, output_tokens=o),
        model, provider_api_url=url).total_price) for i, c, w, o in usages]
    assert got == pytest.approx(want, rel=1e-12)
