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
- `chrf`: sacrebleu's sentence chrF (character 6-grams, beta 2), 0..1, computed here

LLM-as-judge scorers live in `harness.judge`. `register` adds a scorer of your own (for
example `tool_call_match`, where the reference is a tool call).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rapidfuzz import fuzz
from rapidfuzz.distance import LCSseq

DEFAULT_SCORERS = ("exact", "contains", "similarity", "rouge_l", "chrf")


@dataclass(frozen=True)
class Scorer:
    """A function of (reply, reference); `pass_fail` scorers return bool, the others 0..1.
    `many`, when given, scores whole lists of replies and references at once, the same way."""

    name: str
    function: Callable[[str, str], float | bool]
    pass_fail: bool = False
    many: Callable[[list[str], list[str]], list[float]] | None = None


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


CHRF_ORDER = 6  # sacrebleu's sentence chrF defaults: character 6-grams, beta 2, no spaces
CHRF_BETA = 2
# Why chrF is hand-written: sacrebleu's `sentence_score` costs ~0.8 ms of CPU a row (630 s
# per 100k rows on a loaded machine), and a faster Counter version in Python is no faster:
# building ~1000 n-gram strings a text is the cost. `chrf_many` counts every n-gram of a
# batch at once in numpy, as integers (each character's rank in the batch's alphabet, packed
# with its order and its row into one int64). The statistics and the arithmetic are
# sacrebleu's (effective-order averaging, its default), in its order, so the floats are too.
_CHRF_BATCH = 1024


def _char_ngrams(text: str) -> list[Counter[str]]:
    line = "".join(text.split())
    return [Counter([line[i:i + n] for i in range(len(line) - n + 1)])
            for n in range(1, CHRF_ORDER + 1)]


def _chrf_from_counts(n_hyp: list[int], n_ref: list[int], matches: list[int]) -> float:
    """sacrebleu's chrF f-score from each order's hypothesis, reference and match counts."""
    factor = CHRF_BETA ** 2
    avg_prec = avg_rec = 0.0
    effective_order = 0
    for hyp, ref, match in zip(n_hyp, n_ref, matches, strict=True):
        if hyp > 0 and ref > 0:
            avg_prec += match / hyp
            avg_rec += match / ref
            effective_order += 1
    if effective_order:
        avg_prec /= effective_order
        avg_rec /= effective_order
    if not avg_prec + avg_rec:
        return 0.0
    score = (1 + factor) * avg_prec * avg_rec
    score /= (factor * avg_prec) + avg_rec
    return 100 * score / 100  # sacrebleu's score / 100, to the last bit


def chrf(reply: str, reference: str) -> float:
    """sacrebleu's sentence chrF (character 6-grams, beta 2, whitespace removed), 0..1."""
    hyp, ref = _char_ngrams(reply), _char_ngrams(reference)
    matches = [sum(min(count, r[gram]) for gram, count in h.items() if gram in r)
               for h, r in zip(hyp, ref, strict=True)]
    return _chrf_from_counts([h.total() for h in hyp], [r.total() for r in ref], matches)


def _codes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The code points of `texts` (whitespace removed) end to end, and each text's length."""
    lines = ["".join(t.split()) for t in texts]
    codes = np.frombuffer("".join(lines).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return codes, np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))


def _ngram_keys(ranks: np.ndarray, lengths: np.ndarray, bits: int) -> np.ndarray:
    """One int64 per n-gram occurrence: row, order and the n characters' ranks, packed."""
    row = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    room = lengths[row] - (np.arange(len(ranks)) - start)  # characters from here to the end
    keys, gram = [], ranks
    for n in range(CHRF_ORDER):
        if n:  # the n-gram at i is the (n-1)-gram at i and the character at i + n
            gram = gram[:-1] | (ranks[n:] << (bits * n))
        valid = room[:len(gram)] > n
        keys.append((row[:len(gram)][valid] << (bits * CHRF_ORDER + 3))
                    | (n << (bits * CHRF_ORDER)) | gram[valid])
    return np.concatenate(keys)


def chrf_many(replies: list[str], references: list[str]) -> list[float]:
    """`chrf` of each pair, the same floats, counted for a whole batch at once."""
    out: list[float] = []
    for at in range(0, len(replies), _CHRF_BATCH):
        out += _chrf_batch(replies[at:at + _CHRF_BATCH], references[at:at + _CHRF_BATCH])
    return out


def _chrf_batch(replies: list[str], references: list[str]) -> list[float]:
    hyp, n_hyp = _codes(replies)
    ref, n_ref = _codes(references)
    alphabet, ranks = np.unique(np.concatenate([hyp, ref]), return_inverse=True)
    bits = max(1, (len(alphabet) - 1).bit_length())
    if bits * CHRF_ORDER + 4 + max(0, len(replies) - 1).bit_length() > 63:
        if len(replies) == 1:  # over 511 distinct characters in one pair: count as strings
            return [chrf(replies[0], references[0])]
        half = len(replies) // 2  # a smaller batch has a smaller alphabet and fewer rows
        return (_chrf_batch(replies[:half], references[:half])
                + _chrf_batch(replies[half:], references[half:]))
    ranks = ranks.astype(np.int64)
    # one sort of both sides' n-grams, the side in the lowest bit: in each run of one n-gram,
    # the reply's occurrences come first
    keys = np.sort(np.concatenate([_ngram_keys(ranks[:len(hyp)], n_hyp, bits) << 1,
                                   (_ngram_keys(ranks[len(hyp):], n_ref, bits) << 1) | 1]))
    first = np.flatnonzero(np.diff(keys >> 1, prepend=-1))
    in_hyp = np.add.reduceat(1 - (keys & 1), first)
    in_ref = np.diff(first, append=len(keys)) - in_hyp
    cell = keys[first] >> (bits * CHRF_ORDER + 1)  # row * 8 + order - 1
    matches = np.bincount(cell, weights=np.minimum(in_hyp, in_ref),
                          minlength=len(replies) * 8).reshape(-1, 8)[:, :CHRF_ORDER]
    orders = np.arange(CHRF_ORDER)
    hyp_totals = np.maximum(n_hyp[:, None] - orders, 0).tolist()
    ref_totals = np.maximum(n_ref[:, None] - orders, 0).tolist()
    return [_chrf_from_counts(h, r, m) for h, r, m in
            zip(hyp_totals, ref_totals, matches.astype(np.int64).tolist(), strict=True)]


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
    "chrf": Scorer("chrf", chrf, many=chrf_many),
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
    replies = results.loc[has, "response"].to_numpy(dtype=object).tolist()
    references = results.loc[has, "reference"].to_numpy(dtype=object).tolist()
    pairs = list(zip(replies, references, strict=True))
    for s in chosen:
        try:
            values = s.many(replies, references) if s.many else [
                s.function(reply, reference) for reply, reference in pairs]
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
