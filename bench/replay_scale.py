"""Replay at scale: harness's indexed cassettes vs one big vcrpy cassette vs the json.loads floor.

    .venv/bin/python bench/replay_scale.py                       # 1k, 10k, 100k turns (~12 min)
    .venv/bin/python bench/replay_scale.py --sizes 1000,10000    # a quick run
    .venv/bin/python bench/replay_scale.py --sizes 100000 --formats json --vcrpy-max 0
        # 100k turns in one process and on 2 Dask workers (--dask-workers N, --dask-1m)
    .venv/bin/python bench/replay_scale.py --cap 30 --repeat 3 --dir /dev/shm/scale
        # vcrpy stopped at 30 s; the fastest of 3 harness runs; files kept (and reused) there

For each size it writes, into a temp dir, a dataset of that many user turns (MT-Bench-101
conversations from ../shared/fixtures repeated under distinct ids; synthesized ones when that
file is absent) and its recordings as harness lays them out: one vcrpy cassette per
conversation, with OpenAI-style responses, in each of these formats:

- yaml: what harness writes by default, YAML in flow style that is also JSON;
- json: vcrpy's JSON serializer (`replay --cassette-format json`);
- vcrpy-yaml: YAML in block style as vcrpy itself writes it (cassettes recorded by
  pytest-recording), read by harness through libyaml.

The same interactions also go into ONE cassette per size, written by vcrpy's own serializer:
vcrpy's layout. Then it times, each in a fresh subprocess so that sizes don't share memory
or caches:

- harness: `harness.replay(..., record_mode="none")`, the results DataFrame included, the
  fastest of `--repeat` runs (the floor is the fastest of 3);
- vcrpy: the same requests through stock vcrpy (body matching) from the one big cassette,
  stopped at `--cap` seconds;
- floor: `json.loads` of the same response bodies, the least any replay has to do;
- minimal: the least a Python replay of these cassettes does (`measure_minimal`: read and
  parse each cassette, encode and match each request body, parse each response into a few
  columns, one DataFrame), fastest of `--repeat`: a second baseline, which shows how much of
  the ratio to the floor is the format's and how much is harness's.

Nothing is asserted: targets are printed next to what was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import orjson

from harness import cassettes
from harness.cassettes import LATENCY_HEADER, SCRUBBED, cassette_path, write_cassette
from harness.datasets import conversation_turns, load_dataset
from harness.providers import Provider, encode_body

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "fixtures" / "datasets" / "mtbench101.jsonl"
PROVIDER = Provider(name="openai", protocol="openai", base_url="https://api.openai.com/v1",
                    model="gpt-4o-mini-2024-07-18", params={"temperature": 0, "max_tokens": 512})
PARAMS: dict = {}
HISTORY = "reference"  # the dataset's own replies: prompts don't depend on earlier recordings
TARGET_SECONDS_100K, TARGET_FLOOR_RATIO, TARGET_GROWTH, TARGET_PEAK_MB = 30.0, 10.0, 1.1, 2048


# --- the data -------------------------------------------------------------------------------


def source_conversations() -> list[dict]:
    """Conversations as `{"messages": [...]}` records: MT-Bench-101, else synthesized ones."""
    if SOURCE.exists():
        return [{"messages": [m.model_dump(exclude_defaults=True) | {"role": m.role}
                              for m in c.messages], "metadata": c.metadata}
                for c in load_dataset(SOURCE).conversations]
    topics = ["prime numbers", "the French revolution", "sorting a list in Python", "tides",
              "a pasta recipe", "compound interest", "photosynthesis", "a haiku about rain"]
    out = []
    for n in range(1000):
        messages = []
        for k in range(2 + n % 4):
            topic = topics[(n + k) % len(topics)]
            messages.append({"role": "user", "content": f"Question {k + 1} of dialogue {n}: "
                             f"tell me about {topic}, building on what you said before."})
            messages.append({"role": "assistant", "content": f"Here is what I know about {topic}. "
                             * (3 + (n * 7 + k) % 11)})
        out.append({"messages": messages, "metadata": {"task": "synthetic"}})
    return out


def conversation_id(n: int) -> str:
    """The id of the dataset's n-th conversation."""
    return f"c{n:06d}"


def write_dataset(n_turns: int, folder: Path) -> Path:
    """`scale-<n>.jsonl`: source conversations repeated under distinct ids, `n_turns` user turns."""
    sources = source_conversations()
    path = folder / f"scale-{n_turns}.jsonl"
    left, n = n_turns, 0
    with path.open("w", encoding="utf-8") as fh:
        while left > 0:
            record = sources[n % len(sources)]
            messages, users = [], 0
            for m in record["messages"]:
                if m["role"] == "user":
                    if users == left:
                        break
                    users += 1
                messages.append(m)
            fh.write(json.dumps({"id": conversation_id(n), **record, "messages": messages},
                                ensure_ascii=False) + "\n")
            left -= users
            n += 1
    return path


def request_body(prefix) -> bytes:
    """What replay.py sends for a prefix: the provider's body as harness encodes it."""
    return encode_body(PROVIDER.build_body(list(prefix), PARAMS))


def response_body(conversation_id: str, turn: int, text: str, prompt_bytes: int) -> str:
    """An OpenAI chat completion as the API sends it (pretty-printed, as OpenAI does)."""
    prompt_tokens, completion_tokens = prompt_bytes // 4, max(1, len(text) // 4)
    return json.dumps({
        "id": f"chatcmpl-{conversation_id}-{turn}",
        "object": "chat.completion",
        "created": 1730000000 + turn,
        "model": PROVIDER.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_0ba0d124f1",
    }, indent=2, ensure_ascii=False)


def interaction(conversation_id: str, turn, n: int) -> dict:
    """One exchange exactly as `Cassette.record` writes it."""
    body = request_body(turn.prefix)
    text = turn.reference or f"Reply to turn {turn.turn}."
    reply = response_body(conversation_id, turn.turn, text, len(body))
    return {
        "request": {
            "body": body.decode("utf-8"),
            "headers": {
                "host": ["api.openai.com"], "accept": ["*/*"],
                "accept-encoding": ["gzip, deflate, br, zstd"], "connection": ["keep-alive"],
                "user-agent": ["python-httpx/0.28.1"], "content-length": [str(len(body))],
                "content-type": ["application/json"], "authorization": [SCRUBBED],
            },
            "method": "POST",
            "uri": PROVIDER.url,
        },
        "response": {
            "body": {"string": reply},
            "headers": {
                "date": ["Mon, 28 Oct 2024 10:00:00 GMT"],
                "content-type": ["application/json"],
                "connection": ["keep-alive"],
                "access-control-expose-headers": ["X-Request-ID"],
                "openai-organization": [SCRUBBED],
                "openai-processing-ms": [str(300 + n % 900)],
                "openai-project": [SCRUBBED],
                "openai-version": ["2020-10-01"],
                "x-envoy-upstream-service-time": [str(310 + n % 900)],
                "x-ratelimit-limit-requests": ["30000"],
                "x-ratelimit-limit-tokens": ["150000000"],
                "x-ratelimit-remaining-requests": ["29999"],
                "x-ratelimit-remaining-tokens": [str(149999000 - len(body) // 4)],
                "x-ratelimit-reset-requests": ["2ms"],
                "x-ratelimit-reset-tokens": ["0s"],
                "x-request-id": [f"req_{n:032x}"],
                "strict-transport-security": ["max-age=31536000; includeSubDomains; preload"],
                "cf-cache-status": ["DYNAMIC"],
                "set-cookie": [SCRUBBED],
                "x-content-type-options": ["nosniff"],
                "server": ["cloudflare"],
                "cf-ray": [f"{n:016x}-AMS"],
                "alt-svc": ['h3=":443"; ma=86400'],
                LATENCY_HEADER: [f"{350 + n % 900:.1f}"],
            },
            "status": {"code": 200, "message": "OK"},
        },
    }


def cassette_root(folder: Path, fmt: str) -> tuple[Path, str]:
    """Where the cassettes of a format live, and the serializer harness reads them with."""
    if fmt == "vcrpy-yaml":
        return folder / "cassettes-vcrpy", "yaml"
    return folder / "cassettes", fmt


def write_vcrpy(path: Path, interactions: list[dict]) -> None:
    """A cassette exactly as vcrpy writes one (block-style YAML)."""
    from vcr.serializers import yamlserializer

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yamlserializer.serialize({"interactions": interactions, "version": 1}))


def write_fast(path: Path, interactions: list[dict]) -> None:
    """`write_cassette`'s bytes (tested equal on MT-Bench-101's) without its lock, its fsync and
    the standard library's indenting encoder, which made generating 1M turns take hours."""
    data = {"interactions": interactions, "version": 1}
    text = cassettes._ONE_STRING_LIST.sub(r"[\1]", orjson.dumps(
        data, option=orjson.OPT_INDENT_2).decode())
    if path.suffix != ".json":
        if cassettes._SURROGATE.search(text) or not cassettes._json_is_yaml(data):
            write_cassette(path, interactions)
            return
        text = cassettes._YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    path.write_text(text, encoding="utf-8")


def write_conversations(job: tuple) -> list[dict]:
    """Write the cassettes of some conversations (turns numbered from `n`); their interactions
    if `keep`."""
    folder, dataset_name, formats, conversations, n, keep = job
    everything: list[dict] = []
    made: set[Path] = set()
    for conversation in conversations:
        interactions = []
        for turn in conversation_turns(conversation):
            interactions.append(interaction(conversation.id, turn, n))
            n += 1
        for fmt in formats:
            root, serializer = cassette_root(folder, fmt)
            path = cassette_path(root, dataset_name, PROVIDER.name, conversation.id, serializer)
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            (write_vcrpy if fmt == "vcrpy-yaml" else write_fast)(path, interactions)
        if keep:
            everything += interactions
    return everything


LINK_ABOVE = 100_000  # larger sizes hard-link the cassettes of repeated conversations


def generate(n_turns: int, folder: Path, formats: list[str], big: bool) -> float:
    """Dataset, per-conversation cassettes in each format and (if `big`) one vcrpy cassette,
    written by one process per core (YAML dumping is slow); the seconds it took.

    Above `LINK_ABOVE` turns, conversation n (the source conversation n % len(sources) under
    its own id) gets a hard link to the cassette of the first conversation with that source:
    the same requests, each file still opened and parsed on its own by the replay, but 1M
    turns written in a minute, not an hour (its response ids repeat)."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = load_dataset(write_dataset(n_turns, folder))
    written = dataset.conversations
    if n_turns > LINK_ABOVE:
        written = written[:len(source_conversations())]
    jobs, n, chunk = [], 0, 200
    for i in range(0, len(written), chunk):
        conversations = written[i : i + chunk]
        jobs.append((folder, dataset.name, formats, conversations, n, big))
        n += sum(len(c.user_turns()) for c in conversations)
    assert written is not dataset.conversations or n == n_turns, (n, n_turns)
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        parts = list(pool.imap(write_conversations, jobs))
    for k, conversation in enumerate(dataset.conversations[len(written):], len(written)):
        for fmt in formats:
            root, serializer = cassette_root(folder, fmt)
            original = written[k % len(written)]
            os.link(cassette_path(root, dataset.name, PROVIDER.name, original.id, serializer),
                    cassette_path(root, dataset.name, PROVIDER.name, conversation.id, serializer))
    if big:
        write_vcrpy(folder / "vcrpy" / f"{dataset.name}.yaml", [i for p in parts for i in p])
    return time.perf_counter() - started


# --- measurements, each run in its own subprocess -----------------------------------------


def reset_peak() -> None:
    """Forget the peak so far: a child's ru_maxrss starts at its parent's (Linux)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """This process's peak resident memory since `reset_peak`, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


STREAM_ABOVE = 100_000  # larger runs stream their results to Parquet (`replay(out=...)`)


def measure_harness(folder: Path, n_turns: int, fmt: str) -> dict:
    """One offline replay; above STREAM_ABOVE, as the CLI's `--out results.parquet` runs it: the
    dataset lazy (indexed now, each conversation built as it is replayed), rows streamed."""
    import harness

    lazy = n_turns > STREAM_ABOVE
    started, cpu = time.perf_counter(), time.process_time()
    dataset = load_dataset(folder / f"scale-{n_turns}.jsonl", lazy=lazy)
    load_s, load_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    dataset_mb = peak_mb()
    root, serializer = cassette_root(folder, fmt)
    out = {"out": folder / "results.parquet"} if n_turns > STREAM_ABOVE else {}
    started = time.perf_counter()
    cpu = time.process_time()
    frame = harness.replay(dataset, [PROVIDER], history=HISTORY, record_mode="none",
                           cassette_dir=root, serializer=serializer,
                           params=PARAMS, progress=False, **out)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if out:  # the summary columns came back; the response ids are in the file
        import pyarrow.parquet as pq

        ids = pq.read_table(out["out"], columns=["response_id"])["response_id"].to_pandas()
        frame = frame.assign(response_id=ids.to_numpy())
    ok = int((frame["status"] == "ok").sum())
    owner = frame["conversation_id"]  # whose recording each turn replays: its own, or above
    if n_turns > LINK_ABOVE:  # LINK_ABOVE the one its cassette is a hard link to (`generate`)
        sources = len(source_conversations())
        owner = owner.map(lambda cid: conversation_id(int(cid[1:]) % sources))
    mine = int((frame["response_id"] == "chatcmpl-" + owner + "-"
                + frame["turn"].astype("string")).sum())
    return {"seconds": seconds, "cpu_s": cpu, "rows": len(frame), "ok": ok, "own_reply": mine,
            "peak_mb": peak_mb(), "dataset_peak_mb": dataset_mb, "lazy": lazy,
            "load_s": load_s, "load_cpu_s": load_cpu_s}


def measure_floor(folder: Path, n_turns: int) -> dict:
    dataset = load_dataset(folder / f"scale-{n_turns}.jsonl")
    bodies = [interaction(c.id, t, 0)["response"]["body"]["string"]
              for c in dataset.conversations for t in conversation_turns(c)]
    best = best_cpu = math.inf
    for _ in range(3):  # the best of 3: it is short enough for a noisy neighbour to double it
        started, cpu = time.perf_counter(), time.process_time()
        for body in bodies:
            json.loads(body)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {"seconds": best, "cpu_s": best_cpu, "rows": len(bodies), "peak_mb": peak_mb()}


def measure_minimal(folder: Path, n_turns: int, fmt: str) -> dict:
    """The least a Python replay of these cassettes does, as a second baseline: per
    conversation, read and parse its cassette (orjson); per turn, build and encode the
    request body as harness sends it and check it against the recording, parse the response
    and keep its text, finish reason, usage and latency in columns; then one DataFrame. No
    history, error rows, retries, timings, costs or dtypes: what harness adds is the rest."""
    import pandas as pd

    dataset = load_dataset(folder / f"scale-{n_turns}.jsonl")
    root, serializer = cassette_root(folder, fmt)
    started, cpu = time.perf_counter(), time.process_time()
    columns: dict[str, list] = {name: [] for name in (
        "conversation_id", "turn", "response", "finish_reason", "input_tokens",
        "output_tokens", "latency_ms")}
    (ids, turns, texts, finishes, inputs, outputs, latencies) = columns.values()
    for conversation in dataset.conversations:
        path = cassette_path(root, dataset.name, PROVIDER.name, conversation.id, serializer)
        recorded = orjson.loads(path.read_bytes())["interactions"]
        asked = conversation_turns(conversation)
        if len(recorded) < len(asked):  # more is fine: a last, cut conversation shares a file
            raise SystemExit(f"{path}: {len(asked)} turns, {len(recorded)} recordings")
        for turn, interaction in zip(asked, recorded[:len(asked)], strict=True):
            body = encode_body(PROVIDER.build_body(list(turn.prefix), PARAMS))
            if interaction["request"]["body"].encode() != body:
                raise SystemExit(f"{path}: turn {turn.turn} does not match its recording")
            response = interaction["response"]
            reply = orjson.loads(response["body"]["string"])
            choice, usage = reply["choices"][0], reply["usage"]
            ids.append(conversation.id)
            turns.append(turn.turn)
            texts.append(choice["message"]["content"])
            finishes.append(choice["finish_reason"])
            inputs.append(usage["prompt_tokens"])
            outputs.append(usage["completion_tokens"])
            latencies.append(float(response["headers"][LATENCY_HEADER][0]))
    frame = pd.DataFrame(columns)
    return {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
            "rows": len(frame), "peak_mb": peak_mb()}


def measure_vcrpy(folder: Path, n_turns: int) -> dict:
    """Stock vcrpy, one cassette, match on method+host+path+body; prints progress as it goes."""
    import httpx
    import vcr

    dataset = load_dataset(folder / f"scale-{n_turns}.jsonl")
    bodies = [request_body(t.prefix) for c in dataset.conversations for t in conversation_turns(c)]
    my_vcr = vcr.VCR(record_mode="none", match_on=["method", "host", "path", "body"])
    started = time.perf_counter()
    with my_vcr.use_cassette(str(folder / "vcrpy" / f"{dataset.name}.yaml")), httpx.Client() as client:
        print(json.dumps({"loaded_s": time.perf_counter() - started, "done": 0}), flush=True)
        for n, body in enumerate(bodies, 1):
            response = client.post(PROVIDER.url, content=body,
                                   headers={"content-type": "application/json"})
            response.json()
            if n % 50 == 0:
                print(json.dumps({"done": n}), flush=True)
    return {"seconds": time.perf_counter() - started, "rows": len(bodies), "done": len(bodies),
            "peak_mb": peak_mb()}


def run_measurement(args: list[str], cap: float | None) -> dict:
    """Run this script with `--measure ...` in a fresh interpreter; its last JSON line."""
    command = [sys.executable, __file__, "--measure", *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=cap, check=False)
        out, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        progress = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return {"over_cap": True, "done": progress[-1]["done"] if progress else 0,
                "loaded_s": progress[0]["loaded_s"] if progress else None}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        err = proc.stderr.strip().splitlines()
        raise SystemExit(f"measurement {' '.join(args)} failed: {err[-1] if err else code}")
    return json.loads(lines[-1])


# --- Dask: the same offline replay on a LocalCluster ------------------------------------------


def measure_dask(folder: Path, n_turns: int, fmt: str, workers: int) -> dict:
    """`harness.replay(..., client=)` on a fresh `workers`-process LocalCluster; the cluster's
    start is timed apart from the replay (a real cluster is started once, not per run)."""
    import harness
    from harness.distributed_replay import local_cluster

    dataset = load_dataset(folder / f"scale-{n_turns}.jsonl", lazy=n_turns > STREAM_ABOVE)
    root, serializer = cassette_root(folder, fmt)
    out = {"out": folder / "results-dask.parquet"} if n_turns > STREAM_ABOVE else {}
    started = time.perf_counter()
    client = local_cluster(workers)
    cluster_s = time.perf_counter() - started
    try:
        started, cpu = time.perf_counter(), time.process_time()
        frame = harness.replay(dataset, [PROVIDER], history=HISTORY, record_mode="none",
                               cassette_dir=root, serializer=serializer, params=PARAMS,
                               progress=False, client=client, **out)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    ok = int((frame["status"] == "ok").sum())
    return {"seconds": seconds, "cluster_s": cluster_s, "rows": len(frame), "ok": ok,
            "peak_mb": peak_mb(), "driver_cpu_s": cpu}


def dask_section(args: argparse.Namespace, workdir: Path, sizes: list[int], formats: list[str],
                 results: dict) -> None:
    """Offline replay on `--dask-workers` Dask workers next to the one-process figure, at the
    sizes of this run from 100k up (and 1M with --dask-1m)."""
    if args.dask_workers <= 0:
        return
    fmt = formats[0] if formats[0] != "vcrpy-yaml" else "yaml"
    dask_sizes = [s for s in sizes if s >= args.dask_min] + ([1_000_000] if args.dask_1m else [])
    rows = []
    for size in sorted(set(dask_sizes)):
        folder = workdir / f"scale-{size}"
        if not folder.exists():  # 1M: generated here, cassettes of one format only
            seconds = generate(size, folder, [fmt], False)
            print(f"{size:>7} turns: generated in {seconds:.1f} s", flush=True)
        one = results.get((f"harness {fmt}", size))
        if one is None:
            one = run_measurement(["harness", str(folder), str(size), fmt], None)
            results[(f"harness {fmt}", size)] = one
        on_dask = run_measurement(["dask", str(folder), str(size), fmt, str(args.dask_workers)],
                                  None)
        if on_dask["ok"] != size:
            print(f"  !! dask {size}: {on_dask['ok']} of {size} ok", flush=True)
        rows.append((size, one, on_dask))
    header = (f"{'turns':>9} {'1 proc s':>9} {'peak MB':>8} {'Dask s':>8} {'speedup':>8} "
              f"{'start s':>8} {'driver MB':>10}")
    print(f"\noffline {fmt}, one process against {args.dask_workers} Dask workers (start: the "
          "cluster's)\n" + header + "\n" + "-" * len(header))
    for size, one, on_dask in rows:
        print(f"{size:>9} {one['seconds']:>9.2f} {one['peak_mb']:>8.0f} "
              f"{on_dask['seconds']:>8.2f} {one['seconds'] / on_dask['seconds']:>7.2f}x "
              f"{on_dask['cluster_s']:>8.1f} {on_dask['peak_mb']:>10.0f}")
        if size > STREAM_ABOVE:
            say(f"{short(size)}: results streamed to Parquet, the dataset lazy: its first pass "
                f"(validate + index) took {one.get('load_s', 0):.1f} s and the process to "
                f"{one.get('dataset_peak_mb', 0):.0f} MB; one process "
                f"{one.get('cpu_s', 0):.0f} s CPU, the Dask driver "
                f"{on_dask.get('driver_cpu_s', 0):.0f} s CPU")
    say(f"(cores: {os.cpu_count()}; the driver, the scheduler and {args.dask_workers} workers "
        "share them)")


# --- the CLI against the API, end to end -------------------------------------------------------


API_SCRIPT = """
import sys
sys.path.insert(0, {bench!r})
import harness
from replay_scale import HISTORY, PARAMS, PROVIDER
frame = harness.replay({dataset!r}, [PROVIDER], history=HISTORY, record_mode="none",
                       cassette_dir={root!r}, serializer={serializer!r}, params=PARAMS,
                       progress=False)
print(len(frame))
"""


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the child's) of a command run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli_section(folder: Path, size: int, fmt: str, repeat: int) -> None:
    """`harness replay` (summary, the default) against `harness.replay(...)` in a script, each a
    fresh interpreter from start to end (imports and the dataset's load included)."""
    root, serializer = cassette_root(folder, fmt)
    dataset = folder / f"scale-{size}.jsonl"
    providers = folder / "providers.toml"
    params = ", ".join(f"{k} = {json.dumps(v)}" for k, v in PROVIDER.params.items())
    providers.write_text(f'[providers.{PROVIDER.name}]\nprotocol = "{PROVIDER.protocol}"\n'
                         f'base_url = "{PROVIDER.base_url}"\nmodel = "{PROVIDER.model}"\n'
                         f"params = {{ {params} }}\n", encoding="utf-8")
    cli = [sys.executable, "-m", "harness", "replay", str(dataset), "-p", PROVIDER.name,
           "--providers-file", str(providers), "--history", HISTORY, "--cassettes", str(root),
           "--cassette-format", serializer, "--no-progress"]
    api = [sys.executable, "-c", API_SCRIPT.format(bench=str(Path(__file__).parent),
                                                   dataset=str(dataset), root=str(root),
                                                   serializer=serializer)]
    runs = {"api": [], "cli": []}
    for _ in range(max(1, repeat)):  # interleaved, so that both see the same neighbours
        runs["api"].append(timed(api))
        runs["cli"].append(timed(cli))
    (api_wall, api_cpu), (cli_wall, cli_cpu) = (min(runs[k]) for k in ("api", "cli"))
    print()
    say(f"CLI vs API, {size} turns offline ({fmt}), whole process, fastest of {repeat}: "
        f"API {api_wall:.1f} s wall / {api_cpu:.1f} s CPU; CLI {cli_wall:.1f} s wall / "
        f"{cli_cpu:.1f} s CPU; CLI/API {cli_wall / api_wall:.2f}x wall, "
        f"{cli_cpu / api_cpu:.2f}x CPU (target <= 1.2x: "
        f"{'ok' if cli_cpu / api_cpu <= 1.2 else 'MISSED'})")


# --- the table -----------------------------------------------------------------------------


def say(text: str, indent: str = "") -> None:
    """Print prose wrapped to an 80-column terminal."""
    print(textwrap.fill(text, 80, subsequent_indent=indent or "  ", break_on_hyphens=False),
          flush=True)


def short(turns: int) -> str:
    """1000 -> 1k, 1000000 -> 1M."""
    for unit, scale in (("M", 1_000_000), ("k", 1000)):
        if turns >= scale and turns % scale == 0:
            return f"{turns // scale}{unit}"
    return str(turns)


def fmt_seconds(result: dict | None, cap: float) -> str:
    if result is None:
        return "-"
    if result.get("over_cap"):
        return f"> {cap:.0f} (cap)"
    return f"{result['seconds']:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="turns, comma-separated")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds allowed to each vcrpy run")
    parser.add_argument("--formats", default="yaml,json,vcrpy-yaml",
                        help="cassette formats harness replays: yaml, json, vcrpy-yaml")
    parser.add_argument("--vcrpy-max", type=int, default=10000,
                        help="largest size replayed through vcrpy (0: none)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="run each harness replay (of its own formats) this many times and "
                             "keep the fastest, as for the floor: neighbours make noise")
    parser.add_argument("--dir", type=Path, help="keep the generated files here (reused if there)")
    parser.add_argument("--dask-workers", type=int, default=2,
                        help="also replay offline on this many Dask workers (0: not; needs the "
                             "'dask' extra)")
    parser.add_argument("--dask-min", type=int, default=100000,
                        help="the smallest size replayed on Dask too (default 100000)")
    parser.add_argument("--dask-1m", action="store_true",
                        help="also 1,000,000 turns, in one process and on Dask (long)")
    parser.add_argument("--cli", type=int, default=1,
                        help="also time the CLI against the API at the largest size up to 100k "
                             "this many times each (0: not)")
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        reset_peak()
        kind, folder, size, *rest = args.measure
        folder, size = Path(folder), int(size)
        result = {"harness": lambda: measure_harness(folder, size, rest[0]),
                  "floor": lambda: measure_floor(folder, size),
                  "minimal": lambda: measure_minimal(folder, size, rest[0]),
                  "vcrpy": lambda: measure_vcrpy(folder, size),
                  "dask": lambda: measure_dask(folder, size, rest[0], int(rest[1]))}[kind]()
        print(json.dumps(result), flush=True)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    formats = [f for f in args.formats.split(",") if f]
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="replay-scale-"))
    source = SOURCE if SOURCE.exists() else "synthesized conversations (mtbench101.jsonl absent)"
    say(f"source: {source}; files in {workdir}; cores: {os.cpu_count()}; "
        f"python {sys.version.split()[0]}")
    results: dict[tuple[str, int], dict] = {}
    try:
        for size in sizes:
            folder = workdir / f"scale-{size}"
            big = size <= args.vcrpy_max
            marker = folder / f".generated-{'-'.join(formats)}{'-vcrpy' if big else ''}"
            if not marker.exists():
                shutil.rmtree(folder, ignore_errors=True)
                seconds = generate(size, folder, formats, big)
                marker.touch()
                print(f"{size:>7} turns: generated in {seconds:.1f} s", flush=True)
            results[("floor", size)] = run_measurement(["floor", str(folder), str(size)], None)
            plain = [f for f in formats if f != "vcrpy-yaml"]
            if plain:  # the least a Python replay does: the reach of any target on this machine
                results[("minimal", size)] = min(
                    (run_measurement(["minimal", str(folder), str(size), plain[0]], None)
                     for _ in range(max(1, args.repeat))), key=lambda r: r["seconds"])
            for fmt in formats:
                repeat = 1 if fmt == "vcrpy-yaml" else max(1, args.repeat)
                r = min((run_measurement(["harness", str(folder), str(size), fmt], None)
                         for _ in range(repeat)), key=lambda r: r["seconds"])
                results[(f"harness {fmt}", size)] = r
                if r["ok"] != size or r["own_reply"] != size:
                    print(f"  !! harness {fmt} {size}: {r['ok']} ok, {r['own_reply']} "
                          "with their own reply", flush=True)
            if big:
                results[("vcrpy", size)] = run_measurement(["vcrpy", str(folder), str(size)],
                                                           args.cap)
            line = ", ".join(f"{what} {fmt_seconds(r, args.cap)} s"
                             for (what, n), r in results.items() if n == size)
            say(f"{size:>7} turns: {line}", " " * 15)
        print_table(results, sizes, formats, args.cap)
        cli_sizes = [s for s in sizes if s <= 100_000]
        if args.cli and cli_sizes:
            fmt = formats[0] if formats[0] != "vcrpy-yaml" else "yaml"
            cli_section(workdir / f"scale-{max(cli_sizes)}", max(cli_sizes), fmt, args.cli)
        dask_section(args, workdir, sizes, formats, results)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def print_table(results: dict, sizes: list[int], formats: list[str], cap: float) -> None:
    header = (f"{'measurement':<18} {'turns':>7} {'seconds':>10} {'turns/s':>7} "
              f"{'/floor':>7} {'CPU/floor':>9} {'vs vcrpy':>8} {'peak MB':>7}")
    print("\n" + header + "\n" + "-" * len(header))
    for size in sizes:
        floor = results.get(("floor", size))
        vc = results.get(("vcrpy", size))
        for what in ["floor", "minimal", *(f"harness {f}" for f in formats), "vcrpy"]:
            r = results.get((what, size))
            if r is None:
                continue
            if r.get("over_cap"):
                loaded = (f"cassette loaded in {r['loaded_s']:.1f} s, then "
                          if r.get("loaded_s") is not None else "still loading the cassette: ")
                print(f"{what:<18} {size:>7} {fmt_seconds(r, cap):>10} "
                      f"{'< ' + format(r['done'] / cap, '.0f'):>7}")
                say(f"{'':<18} ({loaded}{r['done']} of {size} replayed within the cap)",
                    " " * 20)
                continue
            per_floor = f"{r['seconds'] / floor['seconds']:.1f}x" if floor else "-"
            cpu_floor = (f"{r['cpu_s'] / floor['cpu_s']:.1f}x"  # what neighbours barely move
                         if floor and "cpu_s" in r and "cpu_s" in floor else "-")
            vs = "-"
            if what.startswith("harness") and vc is not None:
                vs = (f"> {cap / r['seconds']:.0f}x" if vc.get("over_cap")
                      else f"{vc['seconds'] / r['seconds']:.0f}x")
            print(f"{what:<18} {size:>7} {r['seconds']:>10.3f} {size / r['seconds']:>7.0f} "
                  f"{per_floor:>7} {cpu_floor:>9} {vs:>8} {r['peak_mb']:>7.0f}")
    print()
    pairs = [(a, b) for a, b in zip(sizes, sizes[1:], strict=False) if b > a]
    for what in ["floor", *(f"harness {f}" for f in formats)]:
        for a, b in pairs:
            ra, rb = results.get((what, a)), results.get((what, b))
            if ra and rb:
                exponent = math.log(rb["seconds"] / ra["seconds"]) / math.log(b / a)
                per_turn = (rb["seconds"] / b) / (ra["seconds"] / a)
                target = ""
                if what.startswith("harness") and what != "harness vcrpy-yaml" and a >= 10000:
                    # below 10k, fixed costs (imports) still show
                    flag = "ok" if per_turn <= TARGET_GROWTH else "MISSED"
                    target = f" (target <= x{TARGET_GROWTH}: {flag})"
                say(f"growth {what} {short(a)}->{short(b)}: exponent {exponent:.2f}, "
                    f"per-turn time x{per_turn:.2f}{target}")
    biggest = max(sizes)
    for f in formats:
        r, floor = results.get((f"harness {f}", biggest)), results.get(("floor", biggest))
        if not r:
            continue
        checks = [
            (f"{r['seconds']:.1f} s" + (" (target < 30 s at 100k)" if biggest == 100000 else ""),
             biggest != 100000 or r["seconds"] < TARGET_SECONDS_100K),
            (f"{r['seconds'] / floor['seconds']:.1f}x the json floor (target <= "
             f"{TARGET_FLOOR_RATIO:.0f}x)", r["seconds"] / floor["seconds"] <= TARGET_FLOOR_RATIO),
            (f"{r.get('cpu_s', math.inf) / floor.get('cpu_s', 1):.1f}x its CPU (target <= "
             f"{TARGET_FLOOR_RATIO:.0f}x)",
             r.get("cpu_s", math.inf) / floor.get("cpu_s", 1) <= TARGET_FLOOR_RATIO),
            (f"peak {r['peak_mb']:.0f} MB (target < 2048 MB)", r["peak_mb"] < TARGET_PEAK_MB),
        ]
        if f == "vcrpy-yaml":  # not harness's format: what reading vcrpy's own files costs
            say(f"harness {f} at {biggest} turns: {checks[0][0]}, "
                f"{r['seconds'] / floor['seconds']:.1f}x the json floor (no target: "
                "cassettes as vcrpy writes them, parsed by libyaml)")
            continue
        print(f"harness {f} at {biggest} turns:")
        for text, good in checks:
            print(f"  {text}: {'ok' if good else 'MISSED'}")
        minimal = results.get(("minimal", biggest))
        if minimal:
            say(f"  the minimal replay: {minimal['seconds'] / floor['seconds']:.1f}x the json "
                f"floor; harness {f} is {r['seconds'] / minimal['seconds']:.1f}x it", "    ")


if __name__ == "__main__":
    main()
