"""Every interruption resumes, in every record mode: kill -9 at many points, Ctrl-C, a full
disk; and two processes recording into one folder lose nothing.

After each interruption the same command runs again and must: finish, give the table an
uninterrupted run gives, send no turn that is already journaled or recorded, and leave no
temp, partial or lock file behind.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, write_questions, write_stub_provider

from harness import cassettes, results
from harness.cli import main
from harness.stub_server import StubServer

CONVERSATIONS, TURNS = 4, 3
MEASURED = ["latency_ms", *results.TIMING_COLUMNS]  # wall time: differs run to run
ALL_TURNS = {(c, t) for c in range(CONVERSATIONS) for t in range(1, TURNS + 1)}

# Runs `python -m harness ARGS...` with one function wrapped so that its Nth call kills the
# process with SIGKILL, before or after the real call: a kill at a precise point.
KILLER = r"""
import builtins, importlib, os, signal, sys, threading
module, attribute, nth, when = sys.argv[1].split(":")
owner = importlib.import_module(module)
*parents, name = attribute.split(".")
for part in parents:
    owner = getattr(owner, part)
original, calls, lock = getattr(owner, name, None) or getattr(builtins, name), [0], threading.Lock()
def wrapper(*args, **kwargs):
    with lock:  # saves run in worker threads: each call gets its own number
        calls[0] += 1
        n = calls[0]
    if n == int(nth) and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    value = original(*args, **kwargs)
    if n == int(nth) and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return value
setattr(owner, name, wrapper)
from harness.cli import main
sys.exit(main(sys.argv[2:]))
"""

# name -> (function, call number, before/after): the points a run is killed at
KILL_POINTS = {
    "during a turn (answer received, not recorded)": "harness.cassettes:Cassette.record:5:before",
    "between a cassette save and its journal row": "harness.results:Journal.append:5:before",
    "during a cassette write (0-byte temp file)": "harness.cassettes:os.write:4:before",
    "during a cassette write (temp file written, not renamed)": "harness.cassettes:os.fsync:6:after",
    "before a rename (temp to partial, or partial to cassette)":
        "harness.cassettes:os.replace:7:before",
    "first save of a conversation, before its first journal row":
        "harness.results:Journal.append:1:before",
}
REPLAY_KILL_POINTS = {  # mode none writes no cassette
    "during a replayed turn": "harness.cassettes:Cassette.take:5:after",
    "between a replayed turn and its journal row": "harness.results:Journal.append:5:before",
}
OVER_AN_OLD_RECORDING = ["between a cassette save and its journal row",
                         "first save of a conversation, before its first journal row",
                         "before a rename (temp to partial, or partial to cassette)"]
CASES = [("none", name, spec) for name, spec in REPLAY_KILL_POINTS.items()] + [
    (mode, name, spec) for mode in ("once", "new_episodes", "all")
    for name, spec in KILL_POINTS.items()
] + [("all over an old recording", name, KILL_POINTS[name]) for name in OVER_AN_OLD_RECORDING]


def turn_of(body: dict) -> tuple[int, int]:
    """(conversation, turn) of a request, read from its last user message."""
    words = body["messages"][-1]["content"].split()
    return int(words[4]), int(words[1])


def recorded_turns(folder: Path, since: float = 0.0) -> list[tuple[int, int]]:
    """The turn of every request recorded in the cassettes and partial files under `folder`
    (those written at `since` or later)."""
    out = []
    for path in folder.rglob("*"):
        if (path.is_file() and path.name.endswith((".yaml", ".yaml.partial"))
                and path.stat().st_mtime >= since):
            try:
                raws = cassettes._load_raw(path)
            except cassettes.CassetteError:
                continue
            out += [turn_of(json.loads(raw["request"]["body"])) for raw in raws]
    return out


def journaled_turns(journal: Path) -> set[tuple[int, int]]:
    if not journal.exists():
        return set()
    lines = journal.read_bytes().split(b"\n")[1:-1]
    out = set()
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            break
        out.add((int(row["conversation_id"][1:]), row["turn"]))
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")
                  if p.name.endswith((".tmp", ".partial", ".lock", cassettes.RERECORDING_MARKER)))


@pytest.fixture
def project(tmp_path):
    """A dataset, a stub and a providers file pointing at it; `command(...)` builds the argv."""
    dataset = write_questions(tmp_path / "resume.jsonl", CONVERSATIONS, TURNS)
    with StubServer() as stub:
        providers = write_stub_provider(tmp_path / "providers.toml", stub.base_url)

        def command(mode: str, cassette_dir: Path, out: Path | None) -> list[str]:
            argv = ["replay", str(dataset), "-p", "stub", "--providers-file", str(providers),
                    "--record-mode", mode, "--cassettes", str(cassette_dir), "--concurrency",
                    "2", "--no-progress"]
            return argv + (["--out", str(out)] if out else [])

        stub.command = command
        yield stub


@pytest.fixture
def uninterrupted(project, tmp_path):
    """The cassettes and the table of a run that nobody stopped."""
    folder, out = tmp_path / "reference-cassettes", tmp_path / "reference.parquet"
    assert main(project.command("once", folder, out)) == 0
    project.requests.clear()
    return folder, results.load(out)


def test_kill_9_at_any_point_then_the_same_command_resumes(project, uninterrupted, tmp_path,
                                                          capsys):
    reference_cassettes, expected = uninterrupted
    tried: dict[str, int] = {}
    for i, (mode, point, spec) in enumerate(CASES):
        folder, out = tmp_path / f"cassettes-{i}", tmp_path / f"out-{i}.parquet"
        journal = Path(f"{out}.journal.jsonl")
        if mode in ("none", "all over an old recording"):
            shutil.copytree(reference_cassettes, folder)
            time.sleep(0.05)  # file times are coarse: what the run writes is newer
        argv = project.command(mode.split()[0], folder, out)
        project.requests.clear()
        started = time.time()
        killed = subprocess.run([sys.executable, "-c", KILLER, spec, *argv], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        where = f"{mode}, killed {point}"
        assert killed.returncode == -signal.SIGKILL, (where, killed.stderr)
        journaled = journaled_turns(journal)
        on_disk = set(recorded_turns(folder, since=started)) if mode != "none" else set()
        sent_before = [turn_of(r["body"]) for r in project.requests]
        project.requests.clear()

        assert main(argv) == 0, (where, capsys.readouterr().err)
        sent_again = [turn_of(r["body"]) for r in project.requests]
        assert not set(sent_again) & (journaled | on_disk), where
        assert len(sent_again) == len(set(sent_again)), where
        if mode == "none":
            assert sent_before == sent_again == []
            pd.testing.assert_frame_equal(results.load(out), expected, obj=where)
        else:
            assert set(sent_before) | set(sent_again) == ALL_TURNS, where
            # latency is wall time measured live: a turn sent in the killed run replays its
            # own, which an uninterrupted run measured differently
            pd.testing.assert_frame_equal(results.load(out).drop(columns=MEASURED),
                                          expected.drop(columns=MEASURED), obj=where)
            # each turn recorded once: nothing both kept and sent again
            assert sorted(recorded_turns(folder)) == sorted(ALL_TURNS), where
        assert leftovers(folder) == [] and not journal.exists(), where
        tried[mode] = tried.get(mode, 0) + 1
    print(f"\nkill points tried per record mode: {tried}")


@pytest.mark.parametrize("mode", ["once", "new_episodes", "all"])
def test_kill_9_without_out_resumes_from_the_partial_cassette(project, uninterrupted, tmp_path,
                                                              mode):
    _, expected = uninterrupted
    folder = tmp_path / "cassettes"
    argv = project.command(mode, folder, None)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, "harness.cassettes:Cassette.record:7:before", *argv],
        cwd=ROOT, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    # no journal, no save per turn: the conversations in flight kept nothing, the finished
    # ones are cassettes
    finished = {c for c, _ in recorded_turns(folder)}
    assert finished
    project.requests.clear()
    out = tmp_path / "out.parquet"
    assert main(project.command(mode, folder, out)) == 0
    assert not {c for c, _ in (turn_of(r["body"]) for r in project.requests)} & finished
    pd.testing.assert_frame_equal(results.load(out).drop(columns=MEASURED),
                                  expected.drop(columns=MEASURED))
    assert leftovers(folder) == []


@pytest.mark.parametrize("mode,with_out", [("once", True), ("once", False), ("all", False),
                                           ("new_episodes", True)])
def test_ctrl_c_keeps_what_finished_and_the_same_command_resumes(project, uninterrupted,
                                                                 tmp_path, mode, with_out):
    _, expected = uninterrupted
    project.delay = 0.15
    folder, out = tmp_path / "cassettes", tmp_path / "out.parquet"
    journal = Path(f"{out}.journal.jsonl")
    argv = project.command(mode, folder, out if with_out else None)
    child = subprocess.Popen([sys.executable, "-m", "harness", *argv], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(project.requests) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    stderr = child.communicate(timeout=60)[1]
    assert child.returncode == 130
    (line,) = stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("harness: interrupted") and "run the same command again" in line
    journaled = journaled_turns(journal)
    on_disk = set(recorded_turns(folder))
    assert on_disk, "Ctrl-C kept what was recorded"
    if with_out:
        assert journaled and str(out) in line
        partial = results.load(out)  # the rows that finished
        assert {(int(c[1:]), t) for c, t in zip(partial["conversation_id"], partial["turn"],
                                                strict=True)} == journaled
    else:
        assert not out.exists()

    project.delay = 0.0
    project.requests.clear()
    assert main(project.command(mode, folder, out)) == 0
    sent_again = {turn_of(r["body"]) for r in project.requests}
    assert not sent_again & (journaled | on_disk)
    pd.testing.assert_frame_equal(results.load(out).drop(columns=MEASURED),
                                  expected.drop(columns=MEASURED))
    assert sorted(recorded_turns(folder)) == sorted(ALL_TURNS)
    assert leftovers(folder) == [] and not journal.exists()


def _resumes_after_a_full_disk(project, expected, folder: Path, out: Path, fill, free,
                               capsys, caplog, mode: str = "once") -> None:
    argv = project.command(mode, folder, out)
    fill()
    assert main(argv) == 2
    gc.collect()  # a failed save no one looked at is logged now, with its traceback
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    line = err.strip()
    assert "No space left on device" in line and str(folder) in line, line
    # what a resume goes on from: partial recordings, and in mode all its marker
    assert all(n.endswith(".partial") or n == ".harness-rerecording" for n in leftovers(folder))
    journaled = journaled_turns(Path(f"{out}.journal.jsonl"))
    on_disk = set(recorded_turns(folder))
    free()
    project.requests.clear()
    assert main(argv) == 0, capsys.readouterr().err
    sent_again = {turn_of(r["body"]) for r in project.requests}
    assert not sent_again & (journaled | on_disk)
    pd.testing.assert_frame_equal(results.load(out).drop(columns=MEASURED),
                                  expected.drop(columns=MEASURED))
    assert leftovers(folder) == []


@pytest.mark.parametrize("mode", ["once", "new_episodes", "all"])
def test_a_full_disk_is_one_line_and_the_same_command_resumes(project, uninterrupted, tmp_path,
                                                              monkeypatch, capsys, caplog, mode):
    """The disk fills at the 5th cassette write (simulated in-process: the fsync fails)."""
    _, expected = uninterrupted
    real_fsync, calls = os.fsync, [0]

    def fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] >= 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    _resumes_after_a_full_disk(
        project, expected, tmp_path / "cassettes", tmp_path / "out.parquet",
        fill=lambda: monkeypatch.setattr(cassettes.os, "fsync", fsync),
        free=lambda: monkeypatch.setattr(cassettes.os, "fsync", real_fsync), capsys=capsys,
        caplog=caplog,
        mode=mode)


def test_a_real_full_disk_on_a_small_tmpfs(project, uninterrupted, tmp_path, capsys,
                                          caplog):
    _, expected = uninterrupted
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        _resumes_after_a_full_disk(
            project, expected, disk / "cassettes", tmp_path / "out.parquet",
            fill=lambda: None,
            free=lambda: subprocess.run(["mount", "-o", "remount,size=4m", str(disk)],
                                        check=True),
            capsys=capsys, caplog=caplog)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize("modes,journaled", [
    (("new_episodes", "new_episodes"), True), (("all", "all"), False),
    (("once", "new_episodes"), True), (("once", "once"), False), (("all", "new_episodes"), True),
], ids=lambda v: "+".join(v) if isinstance(v, tuple) else ("--out" if v else "no-out"))
def test_two_processes_recording_into_one_folder_lose_nothing(project, tmp_path, modes,
                                                              journaled):
    from vcr.persisters.filesystem import FilesystemPersister
    from vcr.serializers import yamlserializer

    project.delay = 0.15  # long enough that the two runs overlap
    folder = tmp_path / "cassettes"
    children = [
        subprocess.Popen([sys.executable, "-m", "harness", *project.command(
            mode, folder, tmp_path / f"out-{i}.parquet" if journaled else None)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i, mode in enumerate(modes)]
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0, 0], errors
    sent = sorted(turn_of(r["body"]) for r in project.requests)
    assert len(sent) > len(ALL_TURNS)  # both recorded at least part of it
    # every interaction either process sent is in the cassettes, once
    assert sorted(recorded_turns(folder)) == sent
    assert leftovers(folder) == []
    for path in folder.rglob("*.yaml"):
        FilesystemPersister.load_cassette(str(path), yamlserializer)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_saves_turn_by_turn_keep_what_another_writer_added_between_them(tmp_path, suffix):
    """A cassette saved after each turn writes what one save of it all would; and where
    another process wrote into the same partial file between two saves, the next save
    keeps that process's interactions too."""
    import httpx

    def record(cassette: cassettes.Cassette, n: int) -> None:
        request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions",
                                content=json.dumps({"turn": n}).encode())
        cassette.record(request, httpx.Response(200, content=b'{"n": %d}' % n), 1.0)

    at_once = cassettes.Cassette.open(tmp_path / f"at-once{suffix}", "all", since=0)
    for n in range(4):
        record(at_once, n)
    at_once.save()
    turn_by_turn = cassettes.Cassette.open(tmp_path / f"by-turn{suffix}", "all", since=0)
    for n in range(4):
        record(turn_by_turn, n)
        turn_by_turn.save(finished=n == 3)
    assert (tmp_path / f"by-turn{suffix}").read_bytes() == at_once.path.read_bytes()

    path = tmp_path / f"shared{suffix}"
    mine = cassettes.Cassette.open(path, "all", since=0)
    record(mine, 0)
    mine.save(finished=False)
    other = cassettes.Cassette.open(path, "all", since=0)  # another process, the same file
    record(other, 10)
    other.save(finished=False)
    record(mine, 1)
    mine.save(finished=False)
    record(mine, 2)
    mine.save()
    bodies = [json.loads(i.request_body) for i in cassettes.read_cassette(path)]
    assert bodies == [{"turn": 0}, {"turn": 10}, {"turn": 1}, {"turn": 2}]


def test_a_journal_line_cut_short_is_dropped_and_later_rows_are_kept(tmp_path):
    from harness.results import Journal, TurnResult

    path = tmp_path / "out.parquet.journal.jsonl"
    first = Journal(path, {"run": 1})
    first.append(TurnResult("c1", 1, "p", response="one"))
    first.close()
    with path.open("ab") as fh:  # the process died (or the disk filled) mid-line
        fh.write(b'{"conversation_id": "c1", "turn": 2, "prov')
    second = Journal(path, {"run": 1})
    assert [r["turn"] for r in second.rows] == [1]
    second.append(TurnResult("c1", 2, "p", response="two"))
    second.append(TurnResult("c1", 3, "p", response="three"))
    second.close()
    third = Journal(path, {"run": 1})
    assert [r["response"] for r in third.rows] == ["one", "two", "three"]
    assert sorted(third.done()[("c1", "p")]) == [1, 2, 3]


def test_a_journal_killed_before_its_header_was_whole_starts_afresh(tmp_path):
    from harness.results import Journal, TurnResult

    path = tmp_path / "out.parquet.journal.jsonl"
    path.write_bytes(b'{"journ')
    journal = Journal(path, {"run": 1})
    assert journal.rows == []
    journal.append(TurnResult("c1", 1, "p"))
    journal.close()
    assert [r["turn"] for r in Journal(path, {"run": 1}).rows] == [1]


def test_kill_9_while_saves_are_batched_then_resume_sends_no_journaled_turn(tmp_path):
    """Many conversations in flight: their cassette saves share batches (one thread, one lock
    per folder). A kill -9 mid-run, then the same command: no journaled turn is sent again,
    every turn is in the results and recorded exactly once."""
    conversations, turns = 24, 3
    dataset = write_questions(tmp_path / "batched.jsonl", conversations, turns)
    every_turn = {(c, t) for c in range(conversations) for t in range(1, turns + 1)}
    folder, out = tmp_path / "cassettes", tmp_path / "out.parquet"
    journal = Path(f"{out}.journal.jsonl")
    with StubServer(delay=0.05) as stub:
        providers = write_stub_provider(tmp_path / "providers.toml", stub.base_url)
        argv = ["replay", str(dataset), "-p", "stub", "--providers-file", str(providers),
                "--record-mode", "new_episodes", "--cassettes", str(folder), "--concurrency",
                str(conversations), "--no-progress", "--out", str(out)]
        killed = subprocess.run([sys.executable, "-c", KILLER,
                                 "harness.results:Journal.append:30:before", *argv],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        journaled = journaled_turns(journal)
        assert 0 < len(journaled) < len(every_turn)
        # a journaled turn's exchange was on disk before its row was written
        assert journaled <= set(recorded_turns(folder))
        sent_before = [turn_of(r["body"]) for r in stub.requests]
        stub.requests.clear()
        assert main(argv) == 0
        sent_again = [turn_of(r["body"]) for r in stub.requests]
    assert not set(sent_again) & journaled
    assert set(sent_before) | set(sent_again) == every_turn
    frame = results.load(out)
    assert len(frame) == len(every_turn) and (frame["status"] == "ok").all()
    assert sorted(recorded_turns(folder)) == sorted(every_turn)
    assert leftovers(folder) == [] and not journal.exists()
