"""The cost of `--stream` capture per turn, against the non-streamed path, in one run.

    python bench/stream_overhead.py [--turns 200] [--repeats 2]

Against the stub server on 127.0.0.1 (no pause between chunks, so the transport is all
there is to measure), the same turns are recorded, fastest of `--repeats`, as:

- `plain`: the non-streamed request and its JSON reply (the baseline);
- `stream, read whole`: the streamed request, its body read at once (no stamps);
- `stream, timed`: the streamed request through harness's transport (stamps every event);

then replayed offline from the plain and the streamed cassettes. Ratios are against `plain`
(live) and against the plain offline replay, measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from unittest import mock

import httpx

from harness import from_records, replay
from harness.providers import Provider
from harness.stub_server import StubServer
from harness.timings import Timings

replay_mod = importlib.import_module("harness.replay")  # `harness.replay` is also the function


def dataset(turns: int):
    records = [{"id": f"c{i:04d}", "messages": [
        {"role": "user", "content": f"Tell me about item {i} in a few words."},
        {"role": "user", "content": "And then?"}]} for i in range(turns // 2)]
    return from_records(records, name="bench-stream")


async def _read_whole(client: httpx.AsyncClient, request: httpx.Request, adapter, started: float):
    response = await client.send(request)
    await response.aread()
    return response, response.content, Timings(end=round((time.perf_counter() - started) * 1000, 1))


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = dataset(args.turns)
    with StubServer() as stub, tempfile.TemporaryDirectory() as tmp:
        provider = Provider(name="stub-openai", protocol="openai", base_url=f"{stub.base_url}/v1",
                            model="stub-gpt", params={"max_tokens": 40})

        def run(stream: bool, folder: str, mode: str = "all") -> None:
            frame = replay(data, [provider], record_mode=mode, cassette_dir=f"{tmp}/{folder}",
                           progress=False, stream=stream, concurrency=4)
            assert (frame["status"] == "ok").all()

        def whole() -> None:
            with mock.patch.object(replay_mod, "send_streamed", _read_whole):
                run(True, "whole")

        rows = [("plain (live)", timed(lambda: run(False, "plain"), args.repeats)),
                ("stream, read whole (live)", timed(whole, args.repeats)),
                ("stream, timed (live)", timed(lambda: run(True, "stream"), args.repeats)),
                ("plain (offline)", timed(lambda: run(False, "plain", "none"), args.repeats)),
                ("stream, timed (offline)", timed(lambda: run(True, "stream", "none"),
                                                  args.repeats))]
    turns = len(data) * 2
    print(f"{turns} turns, stub on 127.0.0.1, fastest of {args.repeats}")
    print(f"{'path':28} {'seconds':>8} {'ms/turn':>8} {'x plain':>8}")
    for name, seconds in rows:
        base = rows[0][1] if "live" in name else rows[3][1]
        print(f"{name:28} {seconds:8.3f} {seconds / turns * 1000:8.3f} {seconds / base:8.2f}")


if __name__ == "__main__":
    main()
