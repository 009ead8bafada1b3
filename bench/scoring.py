"""Scoring and significance at scale, as ratios against a baseline measured in the same run.

    .venv/bin/python bench/scoring.py                  # 100k rows
    .venv/bin/python bench/scoring.py --rows 10000     # a quick run

Rows are synthetic replies and references (60 to 400 characters, words drawn from a fixed
vocabulary with a seed, a reply sharing part of its reference's words), two providers over
conversations of 4 turns. It times:

- baseline: a plain `reply == reference` pass over the same pairs (the least a scorer does);
- each deterministic scorer through `harness.scores.score` (the column included);
- `harness.significance.significance` on the 100k rows (rouge_l, 2000 bootstrap replicates
  resampling conversations), against a baseline of `groupby("provider").mean()`;
- the same with three providers (Bradley-Terry strengths and their 500 replicates too).

Nothing is asserted: the figures are printed (wall seconds, and the CPU seconds of this
process per scorer, which a machine shared with other jobs disturbs less).
"""

from __future__ import annotations

import argparse
import textwrap
import time

import numpy as np
import pandas as pd

from harness import scores, significance

_VOCABULARY = ("the of and to in is that it for on as with was by at be this from or an are which "
         "flour sugar river Paris tokens reply model answer because light blue red story turn "
         "python error list value name first second step add heat minutes water")
WORDS = _VOCABULARY.split()


def synthetic(rows: int, providers: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    turns = rows // providers
    refs, replies = [], []
    for _ in range(turns):
        ref = rng.choice(WORDS, size=rng.integers(12, 70))
        refs.append(" ".join(ref))
    names = [f"p{k}" for k in range(providers)]
    frames = []
    for k, name in enumerate(names):
        replies = []
        for ref in refs:
            words = ref.split()
            keep = rng.random(len(words)) < 0.5 + 0.1 * k
            noise = rng.choice(WORDS, size=len(words))
            replies.append(" ".join(np.where(keep, words, noise)))
        frames.append(pd.DataFrame({
            "conversation_id": [f"c{i // 4}" for i in range(turns)],
            "turn": [i % 4 + 1 for i in range(turns)],
            "provider": name, "reference": refs, "response": replies,
        }))
    return pd.concat(frames, ignore_index=True)


CPU: dict[str, float] = {}  # seconds of this process's CPU, per measurement


def timed(function, label: str = "") -> tuple[float, object]:
    started, cpu = time.perf_counter(), time.process_time()
    value = function()
    if label:
        CPU[label] = time.process_time() - cpu
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scorers", default="exact,contains,regex:\\bthe\\b,similarity,rouge_l,chrf",
                        help="comma-separated (chrf takes most of the time)")
    args = parser.parse_args()
    data = synthetic(args.rows, 2)
    pairs = list(zip(data["response"], data["reference"], strict=True))
    base, _ = timed(lambda: [a == b for a, b in pairs])
    n = len(data)
    print(f"{n} rows, mean reference {data['reference'].str.len().mean():.0f} characters")
    print(f"{'measurement':<28}{'seconds':>10}{'rows/s':>12}{'x baseline':>12}{'CPU s':>10}")
    print(f"{'baseline str ==':<28}{base:>10.3f}{n / base:>12.0f}{1:>12.1f}")
    scored = data
    total = 0.0
    for name in args.scorers.split(","):
        seconds, scored = timed(lambda name=name, frame=scored: scores.score(frame, [name]), name)
        total += seconds
        print(f"{'score ' + name:<28}{seconds:>10.3f}{n / seconds:>12.0f}{seconds / base:>12.1f}"
              f"{CPU[name]:>10.3f}")
    print(f"{'these scorers together':<28}{total:>10.3f}{n / total:>12.0f}{total / base:>12.1f}")

    if "rouge_l" not in scored:
        scored = scores.score(scored, ["rouge_l"])
    mean_base, _ = timed(lambda: scored.groupby("provider")["rouge_l"].mean())
    print(f"\n{'baseline groupby mean':<28}{mean_base:>10.3f}{n / mean_base:>12.0f}{1:>12.1f}")
    seconds, out = timed(lambda: significance.significance(scored, "rouge_l"))
    print(f"{'significance, 2 providers':<28}{seconds:>10.3f}{n / seconds:>12.0f}"
          f"{seconds / mean_base:>12.1f}")
    print(textwrap.fill(out["pairs"]["sentence"].iloc[0], 80, initial_indent="  ",
                        subsequent_indent="    "))
    three = scores.score(synthetic(args.rows, 3), ["rouge_l"])
    seconds, out = timed(lambda: significance.significance(three, "rouge_l"))
    print(f"{'significance, 3 providers':<28}{seconds:>10.3f}{len(three) / seconds:>12.0f}"
          f"{seconds / mean_base:>12.1f}\n  (Bradley-Terry included, {len(three)} rows)")


if __name__ == "__main__":
    main()
