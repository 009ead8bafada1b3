"""Live replay against a real local model (llama.cpp + SmolLM2) at concurrency 1, 2 and 4.

    python bench/live_concurrency.py [--turns 24] [--max-tokens 48] [--threads 2]

For each concurrency c it starts the server with c request slots, replays the same turns
with `record_mode="all"` into a temporary folder, and prints wall time, turns/s, generated
tokens/s and the speed-up against concurrency 1 measured in the same run. Needs the `local`
extra. Numbers depend on the machine: on 2 cores, more slots mostly overlap HTTP and
prompt processing with generation.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from harness import from_records, replay
from harness.local import LocalServer
from harness.replay import RetryPolicy

TOPICS = ["the sea", "a mountain", "a library", "the moon", "a train", "a garden",
          "an old clock", "a bakery", "a storm", "a violin", "a desert", "a lighthouse"]


def dataset(turns: int):
    records = []
    for i in range(0, turns, 2):
        topic = TOPICS[(i // 2) % len(TOPICS)]
        records.append({"id": f"c{i // 2:03d}", "messages": [
            {"role": "user", "content": f"Write two sentences about {topic} (variation {i})."},
            {"role": "user", "content": "Now summarise that in five words."}]})
    return from_records(records, name="bench-live")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", default="1,2,4")
    args = parser.parse_args()
    data = dataset(args.turns)
    rows = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        with LocalServer("smollm2", port=0, threads=args.threads, ctx_size=1024,
                         parallel=concurrency) as server, tempfile.TemporaryDirectory() as tmp:
            provider = server.provider()
            provider = provider.model_copy(update={"params": {**provider.params,
                                                              "max_tokens": args.max_tokens}})
            started = time.perf_counter()
            frame = replay(data, [provider], history="self", record_mode="all",
                           cassette_dir=tmp, concurrency=concurrency, progress=False,
                           retry=RetryPolicy(attempts=1))
            seconds = time.perf_counter() - started
        tokens = int(frame["output_tokens"].sum())
        rows.append((concurrency, seconds, len(frame) / seconds, tokens / seconds,
                     int((frame["status"] == "ok").sum()), len(frame)))
    base = rows[0][1]
    print(f"live replay, SmolLM2-135M, {len(data)} conversations x 2 turns, "
          f"max_tokens {args.max_tokens}, {args.threads} threads")
    print(f"{'concurrency':>11} {'seconds':>8} {'turns/s':>8} {'tokens/s':>9} {'speed-up':>9} ok")
    for concurrency, seconds, tps, toks, ok, total in rows:
        print(f"{concurrency:>11} {seconds:>8.2f} {tps:>8.2f} {toks:>9.1f} "
              f"{base / seconds:>8.2f}x {ok}/{total}")


if __name__ == "__main__":
    main()
