"""Significance on synthetic data with a known effect and with none; McNemar and Wilson by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness import compare, judge, results, significance
from harness.cli import main


def synthetic(effect: float, conversations: int = 80, turns: int = 3, seed: int = 1,
              providers: tuple[str, ...] = ("A", "B")) -> pd.DataFrame:
    """A score per (conversation, turn, provider): a shared conversation effect (turns of one
    conversation are correlated), turn noise, and `effect` added per provider step."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(conversations):
        base = rng.normal(0.5, 0.15)
        for t in range(1, turns + 1):
            turn = base + rng.normal(0, 0.05)
            for k, provider in enumerate(providers):
                rows.append({"conversation_id": f"c{c}", "turn": t, "provider": provider,
                             "score": turn + k * effect + rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


def test_known_effect_is_detected():
    out = significance.significance(synthetic(0.04), "score", seed=3)
    pair = out["pairs"].iloc[0]
    assert (pair["a"], pair["b"]) == ("A", "B")
    assert pair["low"] > 0 and pair["low"] < 0.04 < pair["high"]
    assert pair["conversations"] == 80 and pair["turns"] == 240
    assert pair["sentence"].startswith("B beats A on score by 0.0")
    assert pair["sentence"].endswith("80 conversations")
    providers = out["providers"]
    assert providers.loc["A", "low"] < providers.loc["A", "mean"] < providers.loc["A", "high"]


def test_no_effect_interval_covers_zero():
    out = significance.significance(synthetic(0.0), "score", seed=3)
    pair = out["pairs"].iloc[0]
    assert pair["low"] < 0 < pair["high"]
    assert pair["sentence"].startswith("no detectable difference between A and B on score")


def test_seeded_results_repeat_and_seed_changes_them():
    data = synthetic(0.01)
    one = significance.significance(data, "score", seed=7)["pairs"]
    assert one.equals(significance.significance(data, "score", seed=7)["pairs"])
    other = significance.significance(data, "score", seed=8)["pairs"]
    assert other["low"].iloc[0] != one["low"].iloc[0]


def test_bootstrap_resamples_conversations_not_turns():
    # 10 conversations of 30 turns each, nearly identical inside a conversation: an interval
    # that treated the 300 turns as independent would be far too narrow
    rng = np.random.default_rng(0)
    rows = [{"conversation_id": f"c{c}", "turn": t, "provider": p, "score": level + rng.normal(0, 1e-3)}
            for c, level in enumerate(rng.normal(0, 1, 10)) for t in range(30) for p in ("A",)]
    data = pd.DataFrame(rows)
    got = significance.significance(data, "score")["providers"].loc["A"]
    naive_half = 1.96 * data["score"].std() / np.sqrt(len(data))
    assert (got["high"] - got["low"]) / 2 > 3 * naive_half


def test_mcnemar_by_hand():
    # discordant pairs: A alone passed 1 turn, B alone 9: p = 2 * (C(10,0) + C(10,1)) / 2**10
    assert significance.mcnemar(1, 9) == pytest.approx(22 / 1024)
    assert significance.mcnemar(5, 5) == 1.0
    rows = []
    outcomes = [(True, False)] + [(False, True)] * 9 + [(True, True)] * 20
    for c, (a, b) in enumerate(outcomes):
        rows += [{"conversation_id": f"c{c}", "turn": 1, "provider": "A", "exact": a},
                 {"conversation_id": f"c{c}", "turn": 1, "provider": "B", "exact": b}]
    data = pd.DataFrame(rows).astype({"exact": "boolean"})
    pair = significance.significance(data, "exact")["pairs"].iloc[0]
    assert (pair["only_a"], pair["only_b"]) == (1, 9)
    assert pair["mcnemar_p"] == pytest.approx(22 / 1024)
    assert pair["diff"] == pytest.approx(8 / 30)
    assert "McNemar p = 0.0215" in pair["sentence"]


def test_wilson_by_hand():
    # 8 of 10: p = 0.8, z = 1.96: (0.8 + z²/20 ± z·sqrt(0.016 + z²/400)) / (1 + z²/10)
    low, high = significance.wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert significance.wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_win_rates_from_judge_verdicts():
    winners = ["x"] * 8 + ["y"] * 2 + ["tie", "inconsistent", "error"]
    pairs = pd.DataFrame({"conversation_id": [f"c{i}" for i in range(len(winners))],
                          "turn": 1, "provider_a": "x", "provider_b": "y", "winner": winners})
    row = significance.win_rates(pairs).iloc[0]
    assert (row["a_wins"], row["b_wins"], row["ties"], row["inconsistent"], row["errors"]) == (8, 2, 1, 1, 1)
    assert row["a_win_rate"] == 0.8
    assert row["low"] == pytest.approx(0.4902, abs=1e-4)
    assert row["judged"] == 13 and row["conversations"] == 13
    assert row["sentence"] == ("no detectable preference between x and y: x wins 8 of 10 decisive "
                               "turns [49%, 94%]; of 13 judged turns 1 tied, 1 inconsistent, "
                               "1 unparsable; 13 conversations")  # 0.49 < 0.5: not yet
    more = pd.concat([pairs.assign(conversation_id=pairs["conversation_id"] + s) for s in "ab"])
    assert significance.win_rates(more).iloc[0]["sentence"] == (
        "x wins 80% [58%, 92%] of 20 decisive turns against y; of 26 judged turns 2 tied, "
        "2 inconsistent, 2 unparsable; 26 conversations")
    # b ahead: the sentence names b first, and the interval is b's
    flipped = more.assign(winner=more["winner"].replace({"x": "y", "y": "x"}))
    assert significance.win_rates(flipped).iloc[0]["sentence"].startswith(
        "y wins 80% [58%, 92%] of 20 decisive turns against x;")


def test_bradley_terry_orders_three_providers():
    out = significance.significance(synthetic(0.05, providers=("A", "B", "C")), "score", seed=0)
    strengths = out["strengths"]
    assert list(strengths.index) == ["C", "B", "A"]
    assert strengths["strength"].sum() == pytest.approx(1.0)
    assert (strengths["low"] <= strengths["strength"]).all()
    assert (strengths["strength"] <= strengths["high"]).all()
    assert strengths.loc["C", "low"] > strengths.loc["A", "high"]
    assert len(out["pairs"]) == 3


def test_compare_significance_and_cli(tmp_path, capsys):
    data = synthetic(0.05, conversations=40)
    assert compare.significance(data, "score")["pairs"]["low"].iloc[0] > 0
    frame = results.to_frame([{**{c: None for c in results.COLUMNS}, "status": "ok",
                               "conversation_id": r.conversation_id, "turn": r.turn,
                               "provider": r.provider, "prompt": ""}
                              for r in data.itertuples()])
    frame = frame.merge(data, on=["conversation_id", "turn", "provider"])
    path = results.save(frame, tmp_path / "scored.parquet")
    assert main(["compare", str(path), "--metric", "score"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "B beats A on score by" in out and "40 conversations" in out
    assert main(["compare", str(path), "--metric", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


def test_which_way_is_better_shapes_the_sentence_and_the_strengths():
    # B is slower by 40 ms a turn: lower is better, so A beats B
    data = synthetic(40.0, providers=("A", "B", "C")).rename(columns={"score": "latency_ms"})
    data["latency_ms"] += 1000
    out = significance.significance(data, "latency_ms", seed=0)
    first = out["pairs"].iloc[0]
    assert first["sentence"].startswith("A beats B on latency_ms (lower is better) by 40")
    assert list(out["strengths"].index) == ["A", "B", "C"]  # the fastest is the strongest
    # more output tokens is neither better nor worse: no winner, no strengths
    tokens = data.rename(columns={"latency_ms": "output_tokens"})
    out = significance.significance(tokens, "output_tokens", seed=0)
    assert out["pairs"].iloc[0]["sentence"].startswith("B is higher than A on output_tokens by 40")
    assert "strengths" not in out
    assert significance.direction("rouge_l") == "higher" and significance.direction("cost_usd") == "lower"


def test_a_provider_missing_conversations_is_resampled_with_the_others():
    data = synthetic(0.1, conversations=60)
    gone = (data["provider"] == "B") & data["conversation_id"].isin([f"c{i}" for i in range(20)])
    data.loc[gone, "score"] = np.nan
    out = significance.significance(data, "score", seed=0)
    b = out["providers"].loc["B"]
    assert (b["conversations"], b["turns"]) == (40, 120)
    assert b["low"] < b["mean"] < b["high"]
    pair = out["pairs"].iloc[0]
    assert (pair["conversations"], pair["turns"]) == (40, 120)
    assert pair["low"] > 0 and "40 conversations" in pair["sentence"]


def test_default_metrics_and_columns_that_are_no_score():
    data = synthetic(0.02).assign(latency_ms=lambda f: f["score"] * 100, cost_usd=0.0,
                                  response="text")
    assert significance.default_metrics(data) == ["score", "latency_ms"]  # cost: one value
    assert significance.default_metrics(data[data["provider"] == "A"]) == []
    judged_one = data.assign(judge_j=data["score"].where(data["provider"] == "A"))
    assert significance.default_metrics(judged_one) == ["score", "latency_ms"]  # one provider
    with pytest.raises(ValueError, match="'response' holds .* not a score"):
        significance.significance(data, "response")
    with pytest.raises(ValueError, match="'empty' has no value in any row"):
        significance.significance(data.assign(empty=np.nan), "empty")


def verdict_table(a_wins: int, b_wins: int, ties: int, inconsistent: int, errors: int = 0,
                  a: str = "A", b: str = "B") -> pd.DataFrame:
    """A judge verdict table as `harness score --pairwise` writes it, two turns a conversation."""
    winners = [a] * a_wins + [b] * b_wins + ["tie"] * ties + ["inconsistent"] * inconsistent + [
        "error"] * errors
    rows = [{"conversation_id": f"c{i // 2}", "turn": i % 2 + 1, "provider_a": a, "provider_b": b,
             "first": "A", "swapped": "B", "winner": w, "judge": "J", "judgment_first": "[[A]]",
             "judgment_swapped": "[[B]]"} for i, w in enumerate(winners)]
    return pd.DataFrame(rows, columns=judge.PAIR_COLUMNS).astype(
        {"turn": "Int64", **{c: "string" for c in judge.PAIR_COLUMNS if c != "turn"}})


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_compare_reads_judge_verdicts_as_win_rates(tmp_path, capsys, suffix):
    scored = results.save(results.to_frame([{"conversation_id": "c0", "turn": 1, "provider": p}
                                            for p in ("A", "B")]), tmp_path / f"scored{suffix}")
    pairs = results.save(verdict_table(60, 20, 5, 9),
                         tmp_path / f"scored.pairwise-A-B{suffix}")
    # Wilson, 60 of 80, z = 1.96: (0.75 + z²/160 ± z·sqrt(0.75·0.25/80 + z²/25600)) / (1 + z²/80)
    # = [0.645, 0.832]
    expected = ("A wins 75% [65%, 83%] of 80 decisive turns against B; of 94 judged turns 5 tied, "
                "9 inconsistent; 47 conversations")
    for argv in (["compare", str(pairs)], ["compare", str(pairs), "--metric", "winner"],
                 ["compare", str(scored), "--metric", "winner"]):  # the tables beside it
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert expected in " ".join(out.split()), out
        assert "a = A, b = B" in out
    assert main(["compare", str(scored)]) == 0  # the summary points at them
    assert f"1 judge verdict table beside it: harness compare {scored} --metric winner" in " ".join(
        capsys.readouterr().out.split())
    assert main(["compare", str(pairs), "--metric", "winner", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["a_wins"], row["b_wins"], row["ties"], row["inconsistent"]) == (60, 20, 5, 9)
    assert row["file"] == str(pairs) and row["judge"] == "J"


def test_bad_verdict_input_is_one_line(tmp_path, capsys):
    lone = results.save(results.to_frame([{"conversation_id": "c0", "turn": 1, "provider": "A"}]),
                        tmp_path / "lone.parquet")
    assert main(["compare", str(lone), "--metric", "winner"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a judge verdict table" in err
    assert "lone.pairwise-A-B.parquet" in err
    pairs = results.save(verdict_table(3, 1, 0, 0), tmp_path / "v.pairwise-A-B.csv")
    assert main(["compare", str(pairs), "--metric", "rouge_l"]) == 2
    assert "is a judge verdict table: its metric is winner" in capsys.readouterr().err
    broken = verdict_table(3, 1, 0, 0)
    broken.loc[2, "winner"] = "C"
    results.save(broken, tmp_path / "broken.pairwise-A-B.csv")
    assert main(["compare", str(tmp_path / "broken.pairwise-A-B.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "broken.pairwise-A-B.csv: row 3: winner 'C' is not provider_a 'A'" in err
    (tmp_path / "odd.pairwise-A-B.csv").write_text("conversation_id,turn,winner\nc0,1,A\n")
    assert main(["compare", str(tmp_path / "odd.pairwise-A-B.csv"), "--metric", "winner"]) == 2
    err = capsys.readouterr().err
    assert "odd.pairwise-A-B.csv" in err and "not a judge verdict table" in err


def test_judge_ratings_and_verdicts_recorded_then_compared(tmp_path, capsys):
    """`harness score --judge --pairwise` against a real server on 127.0.0.1, then `compare`
    on the judge's ratings and on the verdict table it wrote beside the scored results."""
    from test_judge import DIALOGUE, answered, judge_providers_file

    from harness.stub_server import StubServer

    path = results.save(results.to_frame(answered("p", DIALOGUE) + answered("q", DIALOGUE)),
                        tmp_path / "run.parquet")
    with StubServer() as stub:
        toml = judge_providers_file(tmp_path, stub)
        assert main(["score", str(path), "-s", "exact", "--providers-file", str(toml),
                     "--cassettes", str(tmp_path / "cassettes"), "--judge", "stub-judge",
                     "--pairwise", "p,q", "--record-mode", "once",
                     "--out", str(tmp_path / "judged.parquet")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "judged.parquet"), "--metric", "judge_stub-judge"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "judge_stub-judge: mean per provider" in out
    assert "no detectable difference between p and q on judge_stub-judge" in out  # both 8
    assert main(["compare", str(tmp_path / "judged.parquet"), "--metric", "winner"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    verdicts = pd.read_parquet(tmp_path / "judged.pairwise-p-q.parquet")
    assert significance.win_rates(verdicts)["sentence"].iloc[0] in out
    assert "judge stub-judge, a = p, b = q" in out
    assert f"of {len(verdicts)} judged turns" in out


def test_tool_call_match_is_a_pass_fail_metric_of_the_page():
    outcomes = [(True, False)] * 2 + [(False, True)] * 12 + [(True, True)] * 16
    rows = [{"conversation_id": f"c{c}", "turn": 1, "provider": p, "tool_call_match": m}
            for c, pair in enumerate(outcomes) for p, m in zip("AB", pair, strict=True)]
    data = pd.DataFrame(rows).astype({"tool_call_match": "boolean"})
    assert significance.default_metrics(data) == ["tool_call_match"]
    pair = significance.significance(data, "tool_call_match")["pairs"].iloc[0]
    assert (pair["only_a"], pair["only_b"]) == (2, 12)
    # exact two-sided binomial: 2 * P(X <= 2), X ~ Bin(14, 1/2) = 2 * (1 + 14 + 91) / 2**14
    assert pair["mcnemar_p"] == pytest.approx(212 / 16384)
    assert pair["sentence"].startswith("B beats A on tool_call_match by 0.333")
