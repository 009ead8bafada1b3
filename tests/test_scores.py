"""Deterministic scorers on hand-made pairs with known values, and `harness score`."""

from __future__ import annotations

from difflib import SequenceMatcher

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import compare, results, scores
from harness.cli import main
from harness.results import TurnResult


def frame(*pairs: tuple[str | None, str | None], provider: str = "p") -> pd.DataFrame:
    return results.to_frame([
        TurnResult(conversation_id=f"c{i}", turn=1, provider=provider, response=reply,
                   reference=reference)
        for i, (reply, reference) in enumerate(pairs)
    ])


def test_pass_fail_scorers():
    scored = scores.score(frame(("Paris.", "Paris."), ("  Paris.\n", "Paris."),
                                ("It is PARIS, of course.", "paris"), ("Lyon", "Paris"),
                                (None, "Paris"), ("Paris", None)),
                          ["exact", "contains", "regex:^[A-Z]"])
    assert scored["exact"].tolist()[:4] == [True, True, False, False]
    assert scored["contains"].tolist()[:4] == [True, True, True, False]
    assert scored["regex"].tolist()[:4] == [True, False, True, True]
    assert scored[["exact", "contains", "regex"]].iloc[4:].isna().all().all()  # NA, not False
    assert scores.is_pass_fail(scored["exact"]) and not scores.is_pass_fail(scored["regex"].astype(float))


def test_regex_scorer_uses_the_reference_as_pattern_by_default():
    scored = scores.score(frame(("The answer is 42.", r"\b42\b"), ("420", r"\b42\b")), ["regex"])
    assert scored["regex"].tolist() == [True, False]


def test_rouge_l_by_hand():
    # reply tokens: the cat sat on the mat (6); reference: the cat is on the mat (6)
    # LCS = the cat on the mat = 5, P = R = 5/6, F1 = 5/6
    scored = scores.score(frame(("The cat sat on the mat.", "the cat is on the mat")), ["rouge_l"])
    assert scored["rouge_l"].iloc[0] == pytest.approx(5 / 6)
    # 2 of 4 reply tokens, 2 of 2 reference tokens: P = 1/2, R = 1, F1 = 2/3
    assert scores.rouge_l("a b c d", "b d") == pytest.approx(2 / 3)
    assert scores.rouge_l("", "b d") == 0.0
    assert scores.rouge_l("x y", "b d") == 0.0


def test_similarity_is_two_matches_over_total_length():
    # "abcd" vs "abed": 3 matched characters of 8 in all: 2 * 3 / 8
    assert scores.similarity("abcd", "abed") == pytest.approx(0.75)
    assert scores.similarity("same", "same") == 1.0


def test_difflib_autojunk_lowers_long_texts_and_rapidfuzz_does_not():
    short_ref = " ".join(f"Step {i}: add the flour." for i in range(1, 9))
    short_reply = short_ref.replace("flour", "sugar")
    long_ref = " ".join(f"Step {i}: add the flour." for i in range(1, 12))
    long_reply = long_ref.replace("flour", "sugar")
    assert len(short_ref) < 200 < len(long_ref)
    # the same edit per step, so the true similarity barely moves with length
    exact_short = SequenceMatcher(None, short_reply, short_ref, autojunk=False).ratio()
    exact_long = SequenceMatcher(None, long_reply, long_ref, autojunk=False).ratio()
    assert abs(exact_short - exact_long) < 0.01
    assert SequenceMatcher(None, long_reply, long_ref).ratio() < exact_long - 0.1  # autojunk
    assert scores.similarity(long_reply, long_ref) == pytest.approx(exact_long)
    table = compare.similarity(frame((long_reply, long_ref)))
    assert table.loc["p", "similarity"] == pytest.approx(round(exact_long, 3))


CHRF_PAIRS = [("the cat sat", "the cat sat"), ("xyz", "the cat sat"), ("the cat", "the cat sat"),
              ("", "the cat sat"), ("the cat sat", ""), ("", ""), ("   ", " \t\n"), ("a", "a"),
              ("ab", "ba"), ("Grüße aus Köln", "Grüße, Köln!"), ("猫が座った", "猫が座る"),
              ("Step 1: add the flour. " * 9, "Step 1: add the sugar. " * 11)]


def test_chrf_known_values():
    assert scores.chrf("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert scores.chrf("xyz", "the cat sat") == 0.0
    assert scores.chrf("", "") == scores.chrf("   ", "x") == 0.0
    partial = scores.chrf("the cat", "the cat sat")
    assert 0.3 < partial < 1.0


def _sacrebleu_chrf(reply: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(reply, [reference]).score


@pytest.mark.parametrize(("reply", "reference"), CHRF_PAIRS)
def test_chrf_equals_sacrebleu_on_hand_made_pairs(reply, reference):
    assert scores.chrf(reply, reference) * 100 == pytest.approx(
        _sacrebleu_chrf(reply, reference), abs=1e-9)
    assert scores.chrf_many([reply], [reference]) == [scores.chrf(reply, reference)]
    column = scores.score(frame((reply, reference)), ["chrf"])["chrf"]
    assert column.iloc[0] == scores.chrf(reply, reference)


# few letters, so that n-grams repeat and match; whitespace of several kinds; non-Latin
_CHRF_TEXT = st.text(st.sampled_from("abcab  \t\n\u00a0\u3000éü猫がΩ.,!"), max_size=40) | st.text(
    max_size=12)


@settings(max_examples=400, deadline=None)
@given(_CHRF_TEXT, _CHRF_TEXT)
def test_chrf_equals_sacrebleu_on_generated_strings(reply, reference):
    assert scores.chrf(reply, reference) * 100 == pytest.approx(
        _sacrebleu_chrf(reply, reference), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_CHRF_TEXT, _CHRF_TEXT), max_size=12))
def test_chrf_of_a_batch_equals_sacrebleu_row_by_row(pairs):
    """The numpy batch counts n-grams of all rows at once: no n-gram crosses into a
    neighbour's row, and each row gets sacrebleu's float."""
    replies, references = [p[0] for p in pairs], [p[1] for p in pairs]
    got = scores.chrf_many(replies, references)
    assert got == [scores.chrf(a, b) for a, b in pairs]
    assert [g * 100 for g in got] == pytest.approx(
        [_sacrebleu_chrf(a, b) for a, b in pairs], abs=1e-9)


def test_chrf_of_a_batch_with_a_large_alphabet_splits_it(monkeypatch):
    """Over 511 distinct characters do not pack into 64 bits with their row: the batch is
    split, and a single such pair is counted as strings; the values stay sacrebleu's."""
    han = "".join(map(chr, range(0x4E00, 0x4E00 + 700)))
    pairs = [(han[:400] + "ab", han[300:] + "ab"), ("the cat", "the cat sat"),
             (han[::-1], han), ("", "x")] * 3
    monkeypatch.setattr(scores, "_CHRF_BATCH", 5)  # several batches too
    got = scores.chrf_many([a for a, _ in pairs], [b for _, b in pairs])
    assert [g * 100 for g in got] == pytest.approx([_sacrebleu_chrf(a, b) for a, b in pairs],
                                                   abs=1e-9)
    assert 0 < got[0] < 1 and got[2] < got[0]


def test_unknown_scorer_and_bad_pattern_are_value_errors():
    with pytest.raises(ValueError, match="unknown scorer 'bleu'"):
        scores.score(frame(("a", "a")), ["bleu"])
    with pytest.raises(ValueError, match="not a regular expression"):
        scores.score(frame(("a", "a")), ["regex:("])


def test_score_table_means_per_provider():
    scored = scores.score(pd.concat([frame(("a", "a"), ("b", "a"), provider="p"),
                                     frame(("a", "a"), ("a", "a"), provider="q")]), ["exact"])
    table = compare.score_table(scored)
    assert table.loc["p", "exact"] == 0.5 and table.loc["q", "exact"] == 1.0


def test_cli_score_writes_columns_and_compare_reads_them(tmp_path, capsys):
    path = results.save(frame(("Paris.", "Paris."), ("Lyon", "Paris")), tmp_path / "r.parquet")
    out = tmp_path / "scored.parquet"
    assert main(["score", str(path), "--scorer", "exact", "--scorer", "rouge_l",
                 "--out", str(out)]) == 0
    loaded = results.load(out)
    assert loaded["exact"].tolist() == [True, False]
    assert loaded["rouge_l"].tolist() == [1.0, 0.0]
    assert "exact" in capsys.readouterr().out
    assert main(["compare", str(out)]) == 0  # the score table is among compare's tables
    assert "Scores, mean per provider" in capsys.readouterr().out


def test_cli_unknown_scorer_is_one_line_exit_2(tmp_path, capsys):
    path = results.save(frame(("a", "a")), tmp_path / "r.parquet")
    out = tmp_path / "scored.parquet"
    assert main(["score", str(path), "--scorer", "bleu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown scorer 'bleu'" in err
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_pass_fail_scores_survive_every_format(tmp_path, suffix):
    from harness import significance

    runs = pd.concat([frame(("Paris", "Paris"), ("Lyon", "Paris"), ("x", None), provider="p"),
                      frame(("Lyon", "Paris"), ("Lyon", "Paris"), ("x", None), provider="q")])
    loaded = results.load(results.save(scores.score(runs, ["exact"]), tmp_path / f"s{suffix}"))
    assert loaded["exact"].tolist()[:2] == [True, False] and pd.isna(loaded["exact"].iloc[2])
    pair = significance.significance(loaded, "exact")["pairs"].iloc[0]
    assert (pair["only_a"], pair["only_b"]) == (1, 0)  # McNemar: read back as pass/fail
