"""Scores: each scorer adds one column to a results frame, comparing the reply with the reference.

Deterministic scorers (the same meaning for every provider, NA where a row has no reference
or no reply):

- `exact`: the reply equals the reference, whitespace collapsed (pass/fail)
- `contains`: the reference appears in the reply, case and whitespace ignored (pass/fail)
- `regex`: the reference, as a regular expression, matches somewhere in the reply;
  `regex:PATTERN` matches PATTERN instead (pass/fail)
- `similarity`: rapidfuzz's normalized Indel similarity, 0..1 (difflib's ratio without its
  autojunk heuristic, which lowers scores on texts over 200 characters)
- `rouge_l`: ROUGE-L F1 on lower-cased alphanumeric tokens, 0..1 (as rouge-score tokenizes)
- `chrf`: sacrebleu's chrF (character 6-grams, beta 2), 0..1

LLM-as-judge scorers live in `harness.judge`. `register` adds a scorer of your own (for
example `tool_call_match`, where the reference is a tool call).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
from rapidfuzz import fuzz
from rapidfuzz.distance import LCSseq

DEFAULT_SCORERS = ("exact", "contains", "similarity", "rouge_l", "chrf")


@dataclass(frozen=True)
class Scorer:
    """A function of (reply, reference); `pass_fail` scorers return bool, the others 0..1."""

    name: str
    function: Callable[[str, str], float | bool]
    pass_fail: bool = False


def _squash(text: str) -> str:
    return " ".join(text.split())


def exact(reply: str, reference: str) -> bool:
    """The reply equals the reference once whitespace is collapsed."""
    return _squash(reply) == _squash(reference)


def contains(reply: str, reference: str) -> bool:
    """The reference appears in the reply, case and whitespace ignored."""
    return _squash(reference).casefold() in _squash(reply).casefold()


def similarity(reply: str, reference: str) -> float:
    """Normalized Indel similarity 2*M/T, 0..1 (what difflib's ratio means, without autojunk)."""
    return fuzz.ratio(reply, reference) / 100


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _NON_ALNUM.sub(" ", text.lower()).split()


def rouge_l(reply: str, reference: str) -> float:
    """ROUGE-L F1: the longest common token subsequence against both lengths."""
    hyp, ref = _tokens(reply), _tokens(reference)
    if not hyp or not ref:
        return 0.0
    lcs = LCSseq.similarity(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


_CHRF = None


def chrf(reply: str, reference: str) -> float:
    """sacrebleu's sentence chrF (character 6-grams, beta 2), scaled to 0..1."""
    global _CHRF
    if _CHRF is None:  # sacrebleu takes a moment to import: only when asked for
        from sacrebleu.metrics import CHRF

        _CHRF = CHRF()
    return _CHRF.sentence_score(reply, [reference]).score / 100


def _regex(pattern: str | None) -> Callable[[str, str], bool]:
    compiled = re.compile(pattern) if pattern is not None else None

    def match(reply: str, reference: str) -> bool:
        return (compiled or re.compile(reference)).search(reply) is not None

    return match


SCORERS: dict[str, Scorer] = {
    "exact": Scorer("exact", exact, pass_fail=True),
    "contains": Scorer("contains", contains, pass_fail=True),
    "regex": Scorer("regex", _regex(None), pass_fail=True),
    "similarity": Scorer("similarity", similarity),
    "rouge_l": Scorer("rouge_l", rouge_l),
    "chrf": Scorer("chrf", chrf),
}


def register(scorer: Scorer) -> None:
    """Make a scorer of your own available by name (to `score` and `harness score`)."""
    SCORERS[scorer.name] = scorer


def scorer(spec: str | Scorer) -> Scorer:
    """A scorer by name (`regex:PATTERN` for a fixed pattern), or ValueError naming the known."""
    if isinstance(spec, Scorer):
        return spec
    name, _, argument = spec.partition(":")
    if name == "regex" and argument:
        try:
            return Scorer("regex", _regex(argument), pass_fail=True)
        except re.error as exc:
            raise ValueError(f"scorer {spec!r}: not a regular expression: {exc}") from None
    if name not in SCORERS or argument:
        raise ValueError(f"unknown scorer {spec!r} (expected one of: {', '.join(SCORERS)}, "
                         "regex:PATTERN)")
    return SCORERS[name]


def score(results: pd.DataFrame, scorers: Iterable[str | Scorer] = DEFAULT_SCORERS
          ) -> pd.DataFrame:
    """`results` with one more column per scorer (NA where there is no reference or reply)."""
    chosen = [scorer(s) for s in scorers]
    out = results.copy()
    has = results["reference"].notna() & results["response"].notna()
    pairs = list(zip(results.loc[has, "response"].to_numpy(dtype=object),
                     results.loc[has, "reference"].to_numpy(dtype=object), strict=True))
    for s in chosen:
        try:
            values = [s.function(reply, reference) for reply, reference in pairs]
        except re.error as exc:
            raise ValueError(f"scorer {s.name!r}: a reference is not a regular expression: "
                             f"{exc}") from None
        column = pd.Series(pd.NA, index=results.index,
                           dtype="boolean" if s.pass_fail else "Float64")
        column[has] = pd.array(values, dtype=column.dtype)
        out[s.name] = column
    return out


def is_pass_fail(values: pd.Series) -> bool:
    """A column of pass/fail scores (McNemar applies), as `score` writes them."""
    return pd.api.types.is_bool_dtype(values.dtype)
