"""LLM-as-judge: any configured provider grades replies with MT-Bench's prompts.

Single-answer grading (FastChat's `single-v1`, and `single-v1-multi-turn` from the second
turn on, which shows the whole dialogue) gives a 1-10 rating parsed from `[[rating]]`.
Pairwise comparison (`pair-v2` / `pair-v2-multi-turn`) asks twice, with the two answers in
both positions; a winner must win both ways, both-tie is a tie, anything else is
`inconsistent`. Judge calls are HTTP exchanges like any other: they are recorded in and
replayed from `cassettes/<dataset>/judge-<provider>/<conversation>.yaml`, in the same
record modes, so judged results replay offline bit for bit.

A judge provider's `params` may hold `judge_single` and `judge_pair` tables: params sent only
with the grading calls, or only with the pairwise ones (a llama.cpp `grammar` that makes a
small local judge end in `[[rating]]`, or in `[[A]]`/`[[B]]`/`[[C]]`). A question asked twice
in one run (two providers that gave the same replies) is asked, and recorded, once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from .cassettes import Cassette, MissingRecording, RecordMode, cassette_path, scrub_bytes, scrub_url
from .messages import Message, SystemMessage, UserMessage
from .providers import Provider, known_secrets

# FastChat's judge prompts (fastchat/llm_judge/data/judge_prompts.jsonl), word for word.
_FOCUS = "second"
SINGLE_SYSTEM = "You are a helpful assistant."
SINGLE_TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
    "provided by an AI assistant to the user question displayed below. Your evaluation should "
    "consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level "
    "of detail of the response. Begin your evaluation by providing a short explanation. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a "
    "scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: \"Rating: "
    "[[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]"
)
SINGLE_MULTI_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. You evaluation should focus on the assistant's answer to the second user "
    "question. Begin your evaluation by providing a short explanation. Be as objective as "
    "possible. After providing your explanation, you must rate the response on a scale of 1 to "
    "10 by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n"
)
PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two "
    "AI assistants to the user question displayed below. You should choose the assistant that "
    "follows the user's instructions and answers the user's question better. Your evaluation "
    "should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, "
    "and level of detail of their responses. Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any positional biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow "
    "the length of the responses to influence your evaluation. Do not favor certain names of the "
    "assistants. Be as objective as possible. After providing your explanation, output your "
    "final verdict by strictly following this format: \"[[A]]\" if assistant A is better, "
    "\"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
PAIR_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
    "[The End of Assistant B's Answer]"
)
PAIR_MULTI_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two "
    "AI assistants to the user questions. You should choose the assistant that follows the "
    "user's instructions and answers the user's questions better. Your evaluation should "
    "consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level "
    "of detail of their responses. You should focus on who provides a better answer to the "
    "second user question. Begin your evaluation by comparing the responses of the two "
    "assistants and provide a short explanation. Avoid any positional biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow "
    "the length of the responses to influence your evaluation. Do not favor certain names of the "
    "assistants. Be as objective as possible. After providing your explanation, output your "
    "final verdict by strictly following this format: \"[[A]]\" if assistant A is better, "
    "\"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
             "ninth", "tenth")
DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0, "max_tokens": 512}
KIND_PARAMS = ("judge_single", "judge_pair")  # per kind of call, from the provider's params
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def _focus(system: str, turn: int) -> str:
    """MT-Bench has two turns; from the third on, the prompt names the turn judged."""
    word = _ORDINALS[turn - 1] if turn <= len(_ORDINALS) else f"{turn}th"
    return system.replace(f"the {_FOCUS} user question", f"the {word} user question")


def _dialogue(turns: list[tuple[str, str]], who: str) -> str:
    body = "\n\n".join(f"### User:\n{q}\n\n### Assistant {who}:\n{a}" for q, a in turns)
    return (f"<|The Start of Assistant {who}'s Conversation with User|>\n\n{body}\n\n"
            f"<|The End of Assistant {who}'s Conversation with User|>")


def single_prompt(turns: list[tuple[str, str]]) -> list[Message]:
    """The judge's messages grading the last answer of `turns` [(question, answer), ...]."""
    if len(turns) == 1:
        question, answer = turns[0]
        return [SystemMessage(content=SINGLE_SYSTEM),
                UserMessage(content=SINGLE_TEMPLATE.format(question=question, answer=answer))]
    return [SystemMessage(content=_focus(SINGLE_MULTI_SYSTEM, len(turns))),
            UserMessage(content=_dialogue(turns, "A"))]


def pair_prompt(turns_a: list[tuple[str, str]], turns_b: list[tuple[str, str]]) -> list[Message]:
    """The judge's messages comparing the last answers of two dialogues (A shown first)."""
    if len(turns_a) == 1:
        (question, answer_a), (_, answer_b) = turns_a[0], turns_b[0]
        return [SystemMessage(content=PAIR_SYSTEM),
                UserMessage(content=PAIR_TEMPLATE.format(question=question, answer_a=answer_a,
                                                         answer_b=answer_b))]
    return [SystemMessage(content=_focus(PAIR_MULTI_SYSTEM, len(turns_a))),
            UserMessage(content=_dialogue(turns_a, "A") + "\n\n\n" + _dialogue(turns_b, "B"))]


def parse_rating(judgment: str) -> float | None:
    """The `[[rating]]` of a judgment (FastChat's rule, `[rating]` as fallback), 1..10 or None."""
    match = _RATING.search(judgment) or _RATING_BACKUP.search(judgment)
    if match is None:
        return None
    rating = float(match.group(1))
    return rating if 1 <= rating <= 10 else None


def parse_pair(judgment: str) -> str:
    """`A`, `B`, `tie` or `error`, by FastChat's rule (the first of [[A]], [[B]], [[C]] found)."""
    for mark, verdict in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if mark in judgment:
            return verdict
    return "error"


def combine(first: str, swapped: str, a: str, b: str) -> str:
    """The verdict of both orders: `a`/`b` (won both), `tie`, `inconsistent` or `error`."""
    if "error" in (first, swapped):
        return "error"
    one = {"A": a, "B": b, "tie": "tie"}[first]
    two = {"A": b, "B": a, "tie": "tie"}[swapped]  # positions were swapped
    return one if one == two else "inconsistent"


class Judge:
    """A provider asked for judgments through per-conversation cassettes."""

    def __init__(self, provider: Provider, dataset: str, *, cassette_dir: str | Path = "cassettes",
                 record_mode: RecordMode = "none", params: dict[str, Any] | None = None,
                 timeout: float = 300.0):
        self.provider, self.dataset = provider, dataset
        self.cassette_dir, self.record_mode = Path(cassette_dir), record_mode
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.timeout = timeout
        self.url = str(httpx.URL(provider.url))
        self.headers = provider.request_headers(provider.api_key())
        self.secrets = known_secrets([provider])
        self.match_url = scrub_url(self.url, self.secrets)
        self._cassettes: dict[str, Cassette] = {}
        self._answers: dict[tuple[str, bytes], str] = {}
        self.failures: list[str] = []  # calls that got no answer (their verdicts are NA)
        self._client: httpx.Client | None = None

    @property
    def name(self) -> str:
        return self.provider.name

    def _cassette(self, conversation_id: str) -> Cassette:
        if conversation_id not in self._cassettes:
            path = cassette_path(self.cassette_dir, self.dataset, f"judge-{self.name}",
                                 conversation_id)
            self._cassettes[conversation_id] = Cassette.open(path, self.record_mode, self.secrets)
        return self._cassettes[conversation_id]

    def ask(self, conversation_id: str, turn: int, messages: list[Message],
            kind: str = "single") -> str:
        """The judge's reply text (from the cassette, or recorded when the mode allows);
        `kind` (`single` or `pair`) picks the provider's `judge_<kind>` params."""
        cassette = self._cassette(conversation_id)
        extra = self.provider.params.get(f"judge_{kind}") or {}
        params = {**self.params, **dict.fromkeys(KIND_PARAMS), **extra}
        body = self.provider.build_body(messages, params)
        request = httpx.Request("POST", self.url, headers=self.headers,
                                content=json.dumps(body, ensure_ascii=False).encode("utf-8"))
        asked = (conversation_id, request.content)
        if asked in self._answers:
            return self._answers[asked]
        failed = len(self.failures)
        text = self._answer(cassette, conversation_id, turn, request)
        if len(self.failures) == failed:  # a call that got no answer is asked again
            self._answers[asked] = text
        return text

    def _answer(self, cassette: Cassette, conversation_id: str, turn: int,
                request: httpx.Request) -> str:
        # looked up as it was recorded: scrubbed, as replay does
        hit = cassette.take("POST", self.match_url, scrub_bytes(request.content, self.secrets))
        if hit is not None:
            response = httpx.Response(hit.status, headers=hit.replay_headers(),
                                      content=hit.response_body, request=request)
        elif cassette.may_record:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout)
            started = time.perf_counter()
            try:
                response = self._client.send(request)
                response.read()
            except httpx.TransportError as exc:  # a judge that fails gives no verdict: NA
                self.failures.append(f"conversation {conversation_id!r} turn {turn}: "
                                     f"{type(exc).__name__}")
                return ""
            cassette.record(request, response, round((time.perf_counter() - started) * 1000, 1))
            cassette.save()  # a judge call is slow: an interrupted run keeps what it recorded
        else:
            raise MissingRecording(
                f"no judge recording for conversation {conversation_id!r} turn {turn} judge "
                f"{self.name!r} in {cassette.path} (record it with --record-mode new_episodes)")
        reply = self.provider.adapter.parse_response(response.status_code, response.headers,
                                                     response.content)
        if reply.finish_reason == "error":
            return ""
        return reply.text

    def close(self) -> None:
        """Write every cassette that recorded something; close the HTTP client."""
        for cassette in self._cassettes.values():
            cassette.save()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dialogues(results: pd.DataFrame, provider: str
               ) -> Iterator[tuple[str, int, list[tuple[str, str]] | None]]:
    """(conversation, turn, the provider's dialogue up to it), None where a reply is missing."""
    rows = results[results["provider"] == provider]
    for conversation_id, group in rows.groupby("conversation_id", sort=False):
        turns: list[tuple[str, str]] = []
        broken = False
        for row in group.sort_values("turn").itertuples(index=False):
            ok = row.status == "ok" and isinstance(row.response, str)
            broken = broken or not ok
            turns.append((row.prompt, row.response if ok else ""))
            yield str(conversation_id), int(row.turn), None if broken else list(turns)


def grade(results: pd.DataFrame, judge: Judge, providers: list[str] | None = None
          ) -> pd.DataFrame:
    """`results` with `judge_<judge>`: the 1-10 MT-Bench rating of each reply (NA: none)."""
    column = f"judge_{judge.name}"
    ratings: dict[tuple[str, int, str], float | None] = {}
    for provider in providers or list(dict.fromkeys(results["provider"])):
        for conversation_id, turn, turns in _dialogues(results, provider):
            if turns is None:
                continue
            text = judge.ask(conversation_id, turn, single_prompt(turns))
            ratings[(conversation_id, turn, provider)] = parse_rating(text)
    keys = zip(results["conversation_id"], results["turn"], results["provider"], strict=True)
    out = results.copy()
    out[column] = pd.array([ratings.get((c, int(t), p)) for c, t, p in keys], dtype="Float64")
    return out


PAIR_COLUMNS = ["conversation_id", "turn", "provider_a", "provider_b", "first", "swapped",
                "winner", "judge", "judgment_first", "judgment_swapped"]


def pairwise(results: pd.DataFrame, judge: Judge, a: str, b: str) -> pd.DataFrame:
    """One row per turn both `a` and `b` answered: the verdict in each order and the winner
    (`a`, `b`, `tie`, `inconsistent` when the orders disagree, `error` when unparsable)."""
    theirs = {(c, t): d for c, t, d in _dialogues(results, b)}
    rows = []
    for conversation_id, turn, mine in _dialogues(results, a):
        other = theirs.get((conversation_id, turn))
        if mine is None or other is None:
            continue
        first = judge.ask(conversation_id, turn, pair_prompt(mine, other), "pair")
        swapped = judge.ask(conversation_id, turn, pair_prompt(other, mine), "pair")
        g1, g2 = parse_pair(first), parse_pair(swapped)
        rows.append([conversation_id, turn, a, b, g1, g2, combine(g1, g2, a, b), judge.name,
                     first, swapped])
    return pd.DataFrame(rows, columns=PAIR_COLUMNS).astype(
        {"turn": "Int64", **{c: "string" for c in PAIR_COLUMNS if c != "turn"}})
