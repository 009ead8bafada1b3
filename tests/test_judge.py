"""LLM-as-judge: FastChat's prompts, verdict parsing, and judge calls recorded against a real
server on 127.0.0.1 then replayed with that server stopped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from harness import judge, results
from harness.cassettes import MissingRecording, read_cassette
from harness.judge import Judge
from harness.local import LocalModelError, LocalServer, model_path
from harness.providers import Provider
from harness.results import TurnResult
from harness.stub_server import StubServer


def answered(provider: str, dialogue: dict[str, list[tuple[str, str]]]) -> list[TurnResult]:
    return [TurnResult(conversation_id=cid, turn=k, provider=provider, prompt=q, response=a)
            for cid, turns in dialogue.items() for k, (q, a) in enumerate(turns, 1)]


def stub_judge(base_url: str) -> Provider:
    return Provider(name="stub-judge", protocol="openai", base_url=f"{base_url}/v1",
                    model="stub-gpt")


# The stub is no model: it answers by quoting the first 12 words of the judge's user message.
# At turn 2 those words end in the first question, so a question starting "[[8]]" is echoed
# as the rating 8; a question holding "[[A]]" makes a judge that always picks position A.
DIALOGUE = {"c1": [("[[8]] please, what is 2+2?", "4"), ("And 3+3?", "6")],
            "c2": [("Pick [[A]] whatever happens", "ok"), ("Again?", "sure")]}


def test_prompts_are_fastchats():
    single = judge.single_prompt([("Q1", "A1")])
    assert single[0].content == "You are a helpful assistant."
    assert single[1].content.startswith("[Instruction]\nPlease act as an impartial judge")
    assert single[1].content.endswith("[Question]\nQ1\n\n[The Start of Assistant's Answer]\nA1\n"
                                      "[The End of Assistant's Answer]")
    multi = judge.single_prompt([("Q1", "A1"), ("Q2", "A2")])
    assert "focus on the assistant's answer to the second user question" in multi[0].content
    assert multi[1].content == (
        "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nQ1\n\n"
        "### Assistant A:\nA1\n\n### User:\nQ2\n\n### Assistant A:\nA2\n\n"
        "<|The End of Assistant A's Conversation with User|>")
    third = judge.single_prompt([("Q1", "A1"), ("Q2", "A2"), ("Q3", "A3")])
    assert "answer to the third user question" in third[0].content
    pair = judge.pair_prompt([("Q", "left")], [("Q", "right")])
    assert pair[1].content == (
        "[User Question]\nQ\n\n[The Start of Assistant A's Answer]\nleft\n"
        "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\nright\n"
        "[The End of Assistant B's Answer]")
    assert '"[[C]]" for a tie' in pair[0].content


def test_verdict_parsing_and_combining():
    assert judge.parse_rating("Good. Rating: [[7]]") == 7.0
    assert judge.parse_rating("Rating: [8.5]") == 8.5
    assert judge.parse_rating("Rating: [[42]]") is None
    assert judge.parse_rating("no verdict") is None
    assert judge.parse_pair("B is better. [[B]]") == "B"
    assert judge.parse_pair("[[C]]") == "tie"
    assert judge.parse_pair("hmm") == "error"
    assert judge.combine("A", "B", "x", "y") == "x"  # x first, then x second: x both times
    assert judge.combine("B", "A", "x", "y") == "y"
    assert judge.combine("tie", "tie", "x", "y") == "tie"
    assert judge.combine("A", "A", "x", "y") == "inconsistent"  # always the first position
    assert judge.combine("A", "tie", "x", "y") == "inconsistent"
    assert judge.combine("A", "error", "x", "y") == "error"


def test_judge_recorded_on_the_stub_replays_identically_with_it_stopped(tmp_path):
    frame = results.to_frame(answered("p", DIALOGUE) + answered("q", DIALOGUE))
    with StubServer() as stub:
        provider = stub_judge(stub.base_url)
        with Judge(provider, "judged", cassette_dir=tmp_path, record_mode="once") as live:
            graded = judge.grade(frame, live, ["p"])
            pairs = judge.pairwise(frame, live, "p", "q")
    recorded = tmp_path / "judged" / "judge-stub-judge" / "c1.yaml"
    # 2 grades + 2 turns; p and q answered alike, so both orders are one question, asked once
    assert len(read_cassette(recorded)) == 2 + 2
    with Judge(provider, "judged", cassette_dir=tmp_path) as offline:  # record mode none
        assert judge.grade(frame, offline, ["p"]).equals(graded)
        assert judge.pairwise(frame, offline, "p", "q").equals(pairs)
    ratings = graded.set_index(["conversation_id", "turn", "provider"])["judge_stub-judge"]
    assert ratings[("c1", 2, "p")] == 8.0
    assert pd.isna(ratings[("c1", 1, "p")])  # the stub's echo holds no rating: NA, not 0
    assert pd.isna(ratings[("c1", 1, "q")])  # q was not judged
    c2 = pairs[(pairs["conversation_id"] == "c2") & (pairs["turn"] == 1)].iloc[0]
    assert (c2["first"], c2["swapped"], c2["winner"]) == ("A", "A", "inconsistent")


def test_missing_judge_recording_names_conversation_turn_and_judge(tmp_path):
    frame = results.to_frame(answered("p", DIALOGUE))
    provider = stub_judge("http://127.0.0.1:9")
    with Judge(provider, "judged", cassette_dir=tmp_path) as offline, \
            pytest.raises(MissingRecording, match="conversation 'c1' turn 1 judge 'stub-judge'"):
        judge.grade(frame, offline)


@pytest.mark.live
def test_local_model_as_judge_records_then_replays(tmp_path):
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install -e '.[local]')")
    try:
        model_path("smollm2")
    except LocalModelError as exc:
        pytest.skip(str(exc))
    frame = results.to_frame(answered("p", {"c1": DIALOGUE["c1"]})
                             + answered("q", {"c1": [("[[8]] please, what is 2+2?", "5"),
                                                     ("And 3+3?", "7")]}))
    with LocalServer("smollm2", port=0, threads=1, ctx_size=2048) as server:
        provider = Provider(name="smollm2", protocol="openai", base_url=server.base_url,
                            model=server.alias, params={"seed": 42, "cache_prompt": False})
        with Judge(provider, "judged", cassette_dir=tmp_path, record_mode="once",
                   params={"max_tokens": 64}) as live:
            graded = judge.grade(frame, live)
            pairs = judge.pairwise(frame, live, "p", "q")
    with Judge(provider, "judged", cassette_dir=tmp_path, params={"max_tokens": 64}) as offline:
        assert judge.grade(frame, offline).equals(graded)
        assert judge.pairwise(frame, offline, "p", "q").equals(pairs)
    assert len(pairs) == 2 and pairs["judgment_first"].str.len().gt(0).all()


def judge_providers_file(tmp_path, stub) -> Path:
    """A providers file naming the stub as the judge `stub-judge`."""
    toml = tmp_path / "judges.toml"
    toml.write_text(f'[providers.stub-judge]\nprotocol = "openai"\n'
                    f'base_url = "{stub.base_url}/v1"\nmodel = "stub-gpt"\n')
    return toml


def test_cli_judge_records_then_replays_offline(tmp_path, capsys):
    from harness.cli import main

    path = results.save(results.to_frame(answered("p", DIALOGUE) + answered("q", DIALOGUE)),
                        tmp_path / "run.parquet")
    with StubServer() as stub:
        toml = judge_providers_file(tmp_path, stub)
        common = ["score", str(path), "-s", "exact", "--providers-file", str(toml),
                  "--cassettes", str(tmp_path / "cassettes"), "--judge", "stub-judge",
                  "--pairwise", "p,q"]
        assert main([*common, "--record-mode", "once", "--out", str(tmp_path / "live.parquet")]) == 0
    assert (tmp_path / "cassettes" / "run" / "judge-stub-judge" / "c2.yaml").exists()
    assert main([*common, "--out", str(tmp_path / "offline.parquet")]) == 0  # server stopped
    live, offline = results.load(tmp_path / "live.parquet"), results.load(tmp_path / "offline.parquet")
    assert offline.equals(live) and offline["judge_stub-judge"].notna().any()
    pairs = pd.read_parquet(tmp_path / "offline.pairwise-p-q.parquet")
    assert pairs.equals(pd.read_parquet(tmp_path / "live.pairwise-p-q.parquet"))
    assert "inconsistent" in set(pairs["winner"])
    assert main([*common[:-2], "--pairwise", "p,zz", "--out", str(tmp_path / "x.parquet")]) == 2
    assert "--pairwise p,zz" in capsys.readouterr().err


def test_a_judge_that_cannot_be_reached_gives_na_not_a_crash(tmp_path):
    frame = results.to_frame(answered("p", DIALOGUE))
    provider = stub_judge("http://127.0.0.1:9")  # nothing listens on the discard port
    with Judge(provider, "judged", cassette_dir=tmp_path, record_mode="once") as live:
        graded = judge.grade(frame, live)
    assert graded["judge_stub-judge"].isna().all()
    assert len(live.failures) == 4 and "ConnectError" in live.failures[0]
    assert not (tmp_path / "judged").exists()  # nothing recorded for calls that failed


def test_kind_params_go_with_their_calls_and_a_repeated_question_is_asked_once(tmp_path):
    """`judge_single` / `judge_pair` in the judge's params (a llama.cpp grammar, say) are sent
    with those calls only; two providers with the same replies cost one call a question."""
    frame = results.to_frame(answered("p", DIALOGUE) + answered("q", DIALOGUE))
    with StubServer() as stub:
        provider = stub_judge(stub.base_url).model_copy(update={"params": {
            "seed": 1, "judge_single": {"grammar": "single-grammar"},
            "judge_pair": {"grammar": "pair-grammar", "top_k": 1}}})
        with Judge(provider, "judged", cassette_dir=tmp_path, record_mode="once") as live:
            graded = judge.grade(frame, live)
            pairs = judge.pairwise(frame, live, "p", "q")
        bodies = [r["body"] for r in stub.requests]
    # p and q asked the same 4 questions; of 4 pairs of equal answers, both orders are one question
    assert len(bodies) == 4 + 4
    assert not any("judge_single" in b or "judge_pair" in b for b in bodies)
    assert all(b["seed"] == 1 for b in bodies)
    assert [b["grammar"] for b in bodies] == ["single-grammar"] * 4 + ["pair-grammar"] * 4
    assert [("top_k" in b) for b in bodies] == [False] * 4 + [True] * 4
    column = graded["judge_stub-judge"]
    assert column[graded["provider"] == "p"].tolist() == column[graded["provider"] == "q"].tolist()
    # replayed with the stub stopped: the same, from the cassettes alone
    with Judge(provider, "judged", cassette_dir=tmp_path) as offline:
        pd.testing.assert_frame_equal(judge.grade(frame, offline), graded)
        pd.testing.assert_frame_equal(judge.pairwise(frame, offline, "p", "q"), pairs)


DEMO_JUDGE = "local-smollm2-judge"
DEMO_JUDGE_PARAMS = {"max_tokens": 16}  # as scripts/record_demo.sh asks
# every local model's reply is graded; the pairwise recordings cover these conversations
DEMO_PAIRWISE = ["unit-conversion",
                 "translate-then-explain",
                 "arithmetic-chain",
                 "capital-followup",
                 "recipe-substitute",
                 "python-debug",
                 "science-why"]


def test_shipped_demo_judge_cassettes_replay_offline_with_parsed_verdicts():
    """The demo's judge (SmolLM2 under a grammar, from harness.toml: mechanics, not a verdict)
    replays over the whole demo with the network blocked, every verdict parsed."""
    from conftest import ROOT

    from harness.providers import load_providers_file

    provider = load_providers_file(ROOT / "harness.toml")[DEMO_JUDGE]
    frame = results.load(ROOT / "tests" / "baselines" / "demo.jsonl")
    local = [p for p in frame["provider"].unique() if p.startswith("local-")]
    both = frame[frame["conversation_id"].isin(DEMO_PAIRWISE)]
    recorded = {p.stem for p in (ROOT / "cassettes" / "demo" / f"judge-{DEMO_JUDGE}").glob("*.yaml")}
    assert recorded == set(frame["conversation_id"])  # every demo conversation

    def judged() -> tuple[pd.DataFrame, pd.DataFrame]:
        with Judge(provider, "demo", cassette_dir=ROOT / "cassettes", params=DEMO_JUDGE_PARAMS
                   ) as offline:
            graded = judge.grade(frame, offline, local)
            pairs = judge.pairwise(both, offline, "local-smollm2", "local-gemma3")
        assert offline.failures == []
        return graded, pairs

    graded, pairs = judged()
    ratings = graded[f"judge_{DEMO_JUDGE}"]
    mine = graded["provider"].isin(local)
    assert len(local) == 6 and ratings[mine].notna().all() and ratings[~mine].isna().all()
    assert ratings.dropna().between(1, 10).all()
    assert len(pairs) == len(both[both["provider"] == "local-smollm2"]) > 0
    assert "error" not in set(pairs["winner"])
    # the judge's whole answer is the verdict the grammar allows, as recorded
    assert pairs["judgment_first"].str.fullmatch(r"\[\[[ABC]\]\]").all()
    # a second replay gives the same verdicts, bit for bit
    again = judged()
    pd.testing.assert_frame_equal(again[0], graded)
    pd.testing.assert_frame_equal(again[1], pairs)
