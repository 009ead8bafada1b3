"""Replay on Dask: a 2-worker LocalCluster gives the single-process tables, writes the same
cassettes from the driver, and a driver killed with -9 resumes without sending a journaled
turn again."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, SMALL_RECORDS, stub_providers, write_questions, write_stub_provider
from test_resume import KILLER, journaled_turns, leftovers

from harness import cassettes, replay, results
from harness.cli import main
from harness.datasets import from_records
from harness.stub_server import StubServer

MEASURED = ["latency_ms", *results.TIMING_COLUMNS]  # wall time: differs run to run

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    from harness.distributed_replay import local_cluster

    client = local_cluster(2)
    yield client
    cluster = client.cluster
    client.close()
    cluster.close()


def recordings(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Every cassette under `folder`: its requests and response bodies, in order."""
    return {str(p.relative_to(folder)): [(r["request"]["body"], r["response"]["body"]["string"])
                                         for r in cassettes._load_raw(p)]
            for p in sorted(folder.rglob("*.yaml"))}


def test_two_workers_record_and_replay_the_single_process_tables(client, small_dataset, tmp_path):
    assert len(client.scheduler_info()["workers"]) == 2
    one_dir, dask_dir = tmp_path / "one", tmp_path / "dask"
    with StubServer() as stub:
        providers = stub_providers(stub.base_url)
        one = replay(small_dataset, providers, record_mode="once", cassette_dir=one_dir,
                     progress=False)
        sent_by_one = len(stub.requests)
        stub.requests.clear()
        on_dask = replay(small_dataset, providers, record_mode="once", cassette_dir=dask_dir,
                         progress=False, client=client)
        assert len(stub.requests) == sent_by_one == len(one)  # every turn once, from workers
    # latency_ms (and e2e_ms, its copy) is the wall time of each live call: what two live
    # runs differ in
    pd.testing.assert_frame_equal(on_dask.drop(columns=MEASURED),
                                  one.drop(columns=MEASURED))
    assert on_dask["latency_ms"].notna().all()
    # the driver wrote the cassettes, as one process does: same files, same exchanges
    assert recordings(dask_dir) == recordings(one_dir)
    assert leftovers(dask_dir) == []
    # offline, from the same cassettes, every column equals (latency comes from the cassette)
    offline_one = replay(small_dataset, providers, cassette_dir=dask_dir, progress=False)
    offline_dask = replay(small_dataset, providers, cassette_dir=dask_dir, progress=False,
                          client=client)
    pd.testing.assert_frame_equal(offline_dask, offline_one)
    pd.testing.assert_frame_equal(offline_dask.drop(columns=MEASURED),
                                  one.drop(columns=MEASURED))


def test_a_missing_recording_on_a_worker_is_the_same_clear_error(client, small_dataset,
                                                                  tmp_path):
    with StubServer() as stub:
        providers = stub_providers(stub.base_url)[:1]
        replay(small_dataset, providers, record_mode="once", cassette_dir=tmp_path,
               progress=False, client=client)
    records = copy.deepcopy(SMALL_RECORDS)
    records[2]["messages"][-1]["content"] = "Something never recorded"
    changed = from_records(records, name="small")
    with pytest.raises(cassettes.MissingRecording, match="conversation 'c3' turn 3"):
        replay(changed, providers, cassette_dir=tmp_path, progress=False, client=client)


CONVERSATIONS, TURNS = 8, 3


def turn_of(body: dict) -> tuple[int, int]:
    words = body["messages"][-1]["content"].split()
    return int(words[4]), int(words[1])


def test_kill_9_of_the_driver_then_the_same_command_resumes(tmp_path):
    dataset = write_questions(tmp_path / "dask-resume.jsonl", CONVERSATIONS, TURNS)
    folder, out = tmp_path / "cassettes", tmp_path / "out.parquet"
    journal = Path(f"{out}.journal.jsonl")
    with StubServer(delay=0.05) as stub:
        providers = write_stub_provider(tmp_path / "providers.toml", stub.base_url)
        argv = ["replay", str(dataset), "-p", "stub", "--providers-file", str(providers),
                "--record-mode", "once", "--cassettes", str(folder), "--concurrency", "1",
                "--no-progress", "--workers", "2", "--out", str(out)]
        # killed as the driver journals its 7th row: some batches in, others on the workers
        killed = subprocess.run(
            [sys.executable, "-c", KILLER, "harness.results:Journal.append:7:before", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        before = journaled_turns(journal)
        assert 0 < len(before) < CONVERSATIONS * TURNS
        sent_before = [turn_of(r["body"]) for r in stub.requests]
        stub.requests.clear()
        assert main(argv) == 0
        sent_on_resume = [turn_of(r["body"]) for r in stub.requests]
    journaled = before
    assert not journaled & set(sent_on_resume)  # no journaled turn sent again
    assert len(sent_on_resume) == len(set(sent_on_resume))  # and none sent twice
    every = {(c, t) for c in range(CONVERSATIONS) for t in range(1, TURNS + 1)}
    assert set(sent_before) | set(sent_on_resume) == every
    table = results.load(out)
    assert len(table) == CONVERSATIONS * TURNS and (table["status"] == "ok").all()
    assert not journal.exists() and leftovers(folder) == []
    # what the resumed run wrote replays offline in one process to the same table
    offline = replay(str(dataset), "stub", providers_file=providers, cassette_dir=folder,
                     progress=False)
    pd.testing.assert_frame_equal(offline.drop(columns=MEASURED).reset_index(drop=True),
                                  table.drop(columns=MEASURED).reset_index(drop=True),
                                  check_dtype=False)


def test_without_the_extra_replay_workers_is_one_line_naming_it(small_dataset_file, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    code = main(["replay", str(small_dataset_file), "-p", "openai", "--cassettes",
                 str(tmp_path), "--workers", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'dask' extra" in err and "harness[dask]" in err and "Traceback" not in err


@pytest.mark.parametrize("flags, expected", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--scheduler", "localhost"], "expected tcp://HOST:PORT"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "exclude each other"),
    (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
])
def test_bad_dask_flags_are_one_line_and_exit_2(small_dataset_file, tmp_path, capsys, flags,
                                                expected):
    code = main(["replay", str(small_dataset_file), "-p", "openai", "--cassettes",
                 str(tmp_path), "--no-progress", *flags])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_replay_scheduler_uses_a_running_cluster(client, small_dataset_file, tmp_path):
    folder, out = tmp_path / "cassettes", tmp_path / "out.parquet"
    with StubServer() as stub:
        providers = tmp_path / "providers.toml"
        providers.write_text(
            f'[providers.stub]\nprotocol = "openai"\nbase_url = "{stub.base_url}/v1"\n'
            f'model = "stub-gpt"\n')
        one = replay(str(small_dataset_file), "stub", providers_file=providers,
                     record_mode="once", cassette_dir=folder, progress=False)
    # the stub is gone: the cluster replays offline what one process recorded
    assert main(["replay", str(small_dataset_file), "-p", "stub", "--providers-file",
                 str(providers), "--cassettes", str(folder), "--no-progress",
                 "--scheduler", client.scheduler.address, "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(results.load(out), results.load(_saved(one, tmp_path)))
    assert len(client.scheduler_info()["workers"]) == 2  # the cluster outlives the command


def _saved(frame: pd.DataFrame, folder: Path) -> Path:
    return results.save(frame, folder / "one.parquet")


@pytest.mark.parametrize("on_dask", [False, True])
def test_a_partial_file_holding_every_turn_becomes_the_cassette(client, small_dataset, tmp_path,
                                                              on_dask):
    """A run killed after its last call but before its last save leaves each conversation
    in its partial file: the next run replays every turn from there, sends nothing, and
    makes each partial file the cassette, in one process as on Dask workers."""
    folder = tmp_path / "cassettes"
    with StubServer() as stub:
        providers = stub_providers(stub.base_url)
        first = replay(small_dataset, providers, record_mode="once", cassette_dir=folder,
                       progress=False)
        finished = {p: p.read_bytes() for p in sorted(folder.rglob("*.yaml"))}
        for path in finished:
            path.rename(cassettes.partial_path(path))
        stub.requests.clear()
        again = replay(small_dataset, providers, record_mode="new_episodes",
                       cassette_dir=folder, progress=False, client=client if on_dask else None)
        assert stub.requests == []
    pd.testing.assert_frame_equal(again, replay(small_dataset, providers, cassette_dir=folder,
                                                progress=False))
    assert len(again) == len(first) and (again["status"] == "ok").all()
    assert leftovers(folder) == []
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*.yaml"))} == finished


def test_a_dask_run_keeps_what_another_writer_recorded_into_its_cassettes(
        client, small_dataset, tmp_path, monkeypatch):
    """The driver merges its workers' recordings into the cassettes as they are on disk when it
    writes them back, under the cassette's lock: a recording another process made to the same
    cassettes during the Dask run survives, and so does the Dask run's."""
    from harness import distributed_replay

    folder = tmp_path / "cassettes"
    write_back = distributed_replay._write_back
    other: list[pd.DataFrame] = []

    def meanwhile(*args, **kwargs):
        if not other:  # another writer records the same conversations (other params) first
            other.append(replay(small_dataset, providers, record_mode="new_episodes",
                                cassette_dir=folder, params={"temperature": 0.5},
                                progress=False))
        write_back(*args, **kwargs)

    monkeypatch.setattr(distributed_replay, "_write_back", meanwhile)
    with StubServer() as stub:
        providers = stub_providers(stub.base_url)
        on_dask = replay(small_dataset, providers, record_mode="new_episodes",
                         cassette_dir=folder, progress=False, client=client)
        sent = len(stub.requests)
    assert other and sent == len(on_dask) + len(other[0])
    # offline, both runs' replies come back from the same cassettes: nothing was overwritten
    mine = replay(small_dataset, providers, cassette_dir=folder, progress=False)
    theirs = replay(small_dataset, providers, cassette_dir=folder, progress=False,
                    params={"temperature": 0.5})
    pd.testing.assert_frame_equal(mine.drop(columns=MEASURED), on_dask.drop(columns=MEASURED))
    pd.testing.assert_frame_equal(theirs.drop(columns=MEASURED),
                                  other[0].drop(columns=MEASURED))
    assert leftovers(folder) == []
