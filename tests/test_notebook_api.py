"""The API as a notebook uses it: names or Providers, a dataset path, harness.toml, dtypes."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
from conftest import ROOT

from harness import PRESETS, ProviderConfigError, compare, load_dataset, replay, significance
from harness import results as results_mod
from harness.cassettes import recorded_providers
from harness.messages import FINISH_REASONS
from harness.results import DTYPES

DEMO = ROOT / "datasets" / "demo.jsonl"
CASSETTES = ROOT / "cassettes"


def test_names_providers_a_mix_and_a_path(monkeypatch):
    monkeypatch.chdir(ROOT)  # harness.toml here declares the stub-* providers, as for the CLI
    by_name = replay(str(DEMO), ["stub-cohere-v1", "local-smollm2"], progress=False)
    # rows and tables keep the order the providers were given in
    assert list(dict.fromkeys(by_name["provider"])) == ["stub-cohere-v1", "local-smollm2"]
    assert list(compare.usage(by_name).index) == ["stub-cohere-v1", "local-smollm2"]
    one = replay(DEMO, PRESETS["local-smollm2"], cassette_dir=CASSETTES, progress=False)
    mixed = replay(DEMO, ["stub-cohere-v1", PRESETS["local-smollm2"]], progress=False)
    pd.testing.assert_frame_equal(mixed, by_name)
    as_text = {"provider": "string"}
    pd.testing.assert_frame_equal(one.astype(as_text), by_name[by_name["provider"] == "local-smollm2"]
                                  .reset_index(drop=True).astype(as_text))
    everything = replay(DEMO, progress=False)  # no providers: every one with cassettes
    assert set(everything["provider"]) == set(recorded_providers(CASSETTES, "demo"))


def test_providers_file_outside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no harness.toml here
    with pytest.raises(ProviderConfigError, match="stub-cohere-v2"):
        replay(DEMO, "stub-cohere-v2", cassette_dir=CASSETTES, progress=False)
    frame = replay(DEMO, "stub-cohere-v2", providers_file=ROOT / "harness.toml",
                   cassette_dir=CASSETTES, progress=False)
    assert len(frame) == 26 and set(frame["status"]) == {"ok"}
    assert frame.attrs["run"]["providers"][0]["model"] == "stub-command-a"


def test_the_progress_bar_keeps_its_final_count(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    replay(DEMO, "stub-cohere-v1")
    assert "26/26" in capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]


def test_one_conversation_and_one_set_of_dtypes(monkeypatch):
    monkeypatch.chdir(ROOT)
    results = replay(DEMO, ["local-smollm2", "stub-cohere-v2"], progress=False)
    thread = compare.conversation(results, "capital-followup")
    assert list(thread["role"][:4]) == ["user", "reference", "reply", "reply"]
    assert list(thread.loc[thread["role"] == "user", "text"]) == [
        "What is the capital of France?", "What river runs through it?",
        "Name one famous bridge over that river."]
    with pytest.raises(KeyError, match="nope"):
        compare.conversation(results, "nope")


GIVEN = ["stub-cohere-v2", "local-smollm2", "local-gemma3"]  # not sorted: the run's own order
N, F, S, C = "Int64", "Float64", "string", "category"
KEY = {"conversation_id": S, "turn": N, "provider": C}
# every derived table, every column: the one dtype set (categoricals are checked apart)
EXPECTED = {
    "thread": {"turn": N, "role": S, "provider": C, "text": S, "finish_reason": C,
               "output_tokens": N, "latency_ms": F},
    "side_by_side": {"conversation_id": S, "turn": N, "prompt": S, "reference": S,
                     **dict.fromkeys(GIVEN, S)},
    "finish_reasons": {"stop": N, "length": N},
    "usage": {**dict.fromkeys(["turns", "ok", "errors", "skipped", "input_tokens", "output_tokens",
                               "total_tokens", "cached_input_tokens", "billed_input_tokens",
                               "billed_output_tokens", "retries"], N),
              **dict.fromkeys(["mean_output_tokens", "latency_p50_ms", "latency_p95_ms",
                               "ttft_p50_ms", "ttft_p95_ms", "ttfb_p50_ms", "ttfb_p95_ms",
                               "itl_p50_ms", "itl_p95_ms", "output_tokens_per_s_p50",
                               "output_tokens_per_s_p95", "cost_usd", "cost_per_turn_usd",
                               "cost_per_1k_turns_usd"], F)},
    "tool_calls": {"reference_tool_calls": N, "replied_with_tool_calls": N,
                   "tool_call_matches": N, "tool_call_match_rate": F},
    "similarity": {"similarity": F, "turns_with_reference": N},
    "score_table": {"exact": F, "similarity": F},
    "diff": {**KEY, "change": S, **{f"{c}_{s}": t for c, t in (
        ("response", S), ("finish_reason", C), ("status", C), ("input_tokens", N),
        ("output_tokens", N)) for s in ("before", "after")}},
    "significance providers": {"mean": F, "low": F, "high": F, "conversations": N, "turns": N},
    "significance pairs": {"a": C, "b": C, "diff": F, "low": F, "high": F, "conversations": N,
                           "turns": N, "only_a": N, "only_b": N, "mcnemar_p": F, "sentence": S},
    "significance strengths": {"strength": F, "low": F, "high": F},
    "win_rates": {"a": S, "b": S, "judged": N, "a_wins": N, "b_wins": N, "ties": N,
                  "inconsistent": N, "errors": N, "a_win_rate": F, "low": F, "high": F,
                  "conversations": N, "sentence": S},
}
PER_PROVIDER = ("finish_reasons", "usage", "tool_calls", "similarity", "score_table",
                "significance providers", "significance strengths")


def _derived(results):
    changed = results.copy()
    changed.loc[0, "response"] = "other"
    changed.loc[1, "finish_reason"] = "length"
    streamed = results.assign(**{c: results["latency_ms"] / k for k, c in enumerate(
        ("ttft_ms", "ttfb_ms", "itl_ms", "output_tokens_per_s"), 2)})
    calls = results.assign(reference_tool_calls=pd.array(["[]"] * len(results), dtype="string"),
                           tool_call_match=pd.array([True, None] * (len(results) // 2),
                                                    dtype="boolean"))
    scored = compare.scores(results, ["exact", "similarity"])
    sig = compare.significance(scored, "exact", n_boot=50)
    verdicts = pd.DataFrame({"provider_a": "local-smollm2", "provider_b": "local-gemma3",
                             "conversation_id": ["c1", "c1", "c2"],
                             "winner": ["local-smollm2", "tie", "local-gemma3"]})
    return {"thread": compare.conversation(results, "capital-followup"),
            "side_by_side": compare.side_by_side(results),
            "finish_reasons": compare.finish_reasons(results),
            "usage": compare.usage(streamed),
            "tool_calls": compare.tool_calls(calls),
            "similarity": compare.similarity(results),
            "score_table": compare.score_table(scored),
            "diff": compare.diff(results, changed), "empty diff": compare.diff(results, results),
            "significance providers": sig["providers"], "significance pairs": sig["pairs"],
            "significance strengths": sig["strengths"],
            "win_rates": significance.win_rates(verdicts)}


def test_every_table_has_one_set_of_dtypes(monkeypatch):
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning from a groupby on a categorical
        results = replay(DEMO, GIVEN, progress=False)
        tables = _derived(results)
        tables["one provider's usage"] = compare.usage(results[results["provider"] == "local-gemma3"])
    assert {c: str(results[c].dtype) for c in results.columns} == DTYPES
    for name, table in tables.items():
        expected = EXPECTED[name.removeprefix("empty ") if name in EXPECTED or name.startswith(
            "empty") else "usage"]
        assert {c: str(t) for c, t in table.dtypes.items()} == {c: expected[c] for c in table}, name
        for column in table.columns:  # provider columns share the results' categories
            if str(table[column].dtype) == C:
                source = column.removesuffix("_before").removesuffix("_after")
                source = "provider" if source in ("a", "b") else source
                assert table[column].dtype == results[source].dtype, (name, column)
    for name in PER_PROVIDER:  # indexed by provider in the run's order, no empty category rows
        assert tables[name].index.dtype == results["provider"].dtype, name
        assert sorted(tables[name].index) == sorted(GIVEN)
        if name != "significance strengths":  # strengths are sorted strongest first
            assert list(tables[name].index) == GIVEN, name
    assert list(tables["one provider's usage"].index) == ["local-gemma3"]
    assert list(tables["side_by_side"].columns[4:]) == GIVEN
    assert tables["empty diff"].empty and len(tables["diff"]) == 2


def test_categoricals_are_ordered_and_sort_as_a_reader_expects(monkeypatch):
    monkeypatch.chdir(ROOT)
    results = replay(DEMO, GIVEN, progress=False)
    for column, categories in (("provider", GIVEN), ("finish_reason", list(FINISH_REASONS)),
                               ("status", ["ok", "error", "skipped"])):
        assert results[column].cat.ordered and list(results[column].cat.categories) == categories
    first = results[results["conversation_id"] == results["conversation_id"].iloc[0]]
    assert list(first["provider"][:3]) == GIVEN  # rows: conversation, turn, then provider order
    assert list(dict.fromkeys(results.sort_values("provider")["provider"])) == GIVEN
    by_reason = results.sort_values("finish_reason", kind="stable")["finish_reason"]
    assert list(dict.fromkeys(by_reason)) == ["stop", "length"]  # the vocabulary's order
    assert (results["finish_reason"] < "length").sum() == (results["finish_reason"] == "stop").sum()


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_files_give_the_same_dtypes_back(monkeypatch, tmp_path, suffix):
    monkeypatch.chdir(ROOT)
    frame = compare.scores(replay(DEMO, GIVEN, progress=False), ["exact", "similarity"])
    loaded = results_mod.load(results_mod.save(frame, tmp_path / f"r{suffix}"))
    pd.testing.assert_frame_equal(loaded, frame)
    # what a writer that keeps these columns as plain strings (per row group) reads back
    plain = frame.astype({c: "string" for c in results_mod.CATEGORICAL})
    pd.testing.assert_frame_equal(results_mod.apply_dtypes(plain), frame)


def test_runs_with_different_providers_concatenate_to_the_union(monkeypatch):
    monkeypatch.chdir(ROOT)
    a = replay(DEMO, ["stub-cohere-v2", "local-smollm2"], progress=False)
    b = replay(DEMO, ["local-gemma3", "local-smollm2"], progress=False)
    both = results_mod.concat([a, b], ignore_index=True)
    assert list(both["provider"].cat.categories) == ["stub-cohere-v2", "local-smollm2", "local-gemma3"]
    assert {c: str(both[c].dtype) for c in both.columns} == DTYPES  # no object fallback
    assert list(compare.usage(both).index) == ["stub-cohere-v2", "local-smollm2", "local-gemma3"]
    assert compare.usage(both).loc["local-smollm2", "turns"] == 52
    changes = compare.diff(a, b)  # what `view --baseline` and `diff` do with two runs
    assert str(changes["provider"].dtype) == C
    assert set(changes["change"]) == {"added", "removed"} and len(changes) == 52


def test_an_unseen_finish_reason_or_status_is_kept(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    path = results_mod.save(replay(DEMO, "stub-cohere-v2", progress=False), tmp_path / "r.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace('"finish_reason":"stop"', '"finish_reason":"refusal"')
    lines[1] = lines[1].replace('"status":"ok"', '"status":"queued"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # as a newer harness may write
    frame = results_mod.load(path)
    assert frame["finish_reason"].iloc[0] == "refusal" and frame["status"].iloc[1] == "queued"
    assert list(frame["finish_reason"].cat.categories) == [*FINISH_REASONS, "refusal"]
    assert list(frame["status"].cat.categories) == ["ok", "error", "skipped", "queued"]
    assert compare.finish_reasons(frame).loc["stub-cohere-v2", "refusal"] == 1
    assert compare.usage(frame).loc["stub-cohere-v2", "ok"] == 25  # of 26: one is queued


def test_dataset_frames_show_missing_as_na(monkeypatch):
    ds = load_dataset(DEMO)
    turns, messages = ds.turns_frame(), ds.to_frame()
    assert {str(t) for t in turns.dtypes} <= {"string", "Int64"}
    assert {str(t) for t in messages.dtypes} <= {"string", "Int64"}
    last = turns.groupby("conversation_id").tail(1)
    assert last["reference"].isna().any() and "NaN" not in turns.to_string()
    assert messages["tool_calls"].iloc[0] is pd.NA and "NaN" not in messages.to_string()
