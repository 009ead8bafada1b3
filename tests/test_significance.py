"""Significance on synthetic data with a known effect and with none; McNemar and Wilson by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import compare, results, significance
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
