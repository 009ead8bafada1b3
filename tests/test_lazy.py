"""A lazy dataset: validated and indexed in a first pass, built conversation by conversation as a
replay takes them, so that a run streamed to Parquet holds neither every conversation nor every row.
"""

from __future__ import annotations

import json
import tracemalloc

import pandas as pd
import pytest
from test_cli import assert_one_clear_line, run_cli
from test_scale import PROVIDER, dataset_file, generated

from harness import load_dataset, replay, results
from harness.datasets import DatasetError, LazyDataset
from harness.stub_server import StubServer


def test_a_lazy_replay_to_parquet_equals_the_in_memory_run(tmp_path, monkeypatch):
    _, path = dataset_file(tmp_path, generated(tmp_path, 200, "yaml"))
    eager = load_dataset(path)
    held = replay(eager, [PROVIDER], cassette_dir=tmp_path, progress=False, concurrency=8)
    lazy = load_dataset(path, lazy=True)
    assert isinstance(lazy, LazyDataset) and "lazy" in repr(lazy)
    assert (len(lazy), lazy.ids(), list(lazy.turn_counts())) == (
        len(eager), eager.ids(), list(eager.turn_counts()))
    monkeypatch.setattr(results, "ROW_GROUP_ROWS", 64)  # many row groups
    out = tmp_path / "results.parquet"
    returned = replay(lazy, [PROVIDER], cassette_dir=tmp_path, progress=False, concurrency=8,
                      out=out)
    assert "conversations" not in vars(lazy)  # the replay never built the whole list
    pd.testing.assert_frame_equal(results.load(out), held)
    pd.testing.assert_frame_equal(returned, held[list(results.SUMMARY_COLUMNS)])
    # the notebook API sees the same dataset either way
    pd.testing.assert_frame_equal(lazy.to_frame(), eager.to_frame())
    pd.testing.assert_frame_equal(lazy.turns_frame(), eager.turns_frame())
    assert lazy.conversations == eager.conversations


def test_replay_of_a_path_to_parquet_reads_it_lazily(tmp_path, monkeypatch):
    _, path = dataset_file(tmp_path, generated(tmp_path, 20, "json"))
    built: list[LazyDataset] = []
    original = LazyDataset.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(LazyDataset, "__init__", spy)
    out = tmp_path / "r.parquet"
    frame = replay(path, [PROVIDER], cassette_dir=tmp_path, serializer="json", progress=False,
                   out=out)
    assert len(built) == 1 and "conversations" not in vars(built[0])
    assert len(frame) == 80 and (frame["status"] == "ok").all()


def test_a_malformed_line_deep_in_a_big_file_is_refused_before_anything_is_sent(tmp_path):
    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"id": f"c{n}", "messages": [
        {"role": "user", "content": f"Question {k} of {n}"} for k in range(3)]})
        for n in range(20_000)]
    lines[19_997] = json.dumps({"id": "bad", "messages": [{"role": "wizard", "content": "x"}]})
    path.write_text("\n".join(lines) + "\n")
    out, cassettes = tmp_path / "out" / "r.parquet", tmp_path / "cassettes"
    with StubServer() as stub:
        providers = tmp_path / "providers.toml"
        providers.write_text(f'[providers.stub]\nprotocol = "openai"\n'
                             f'base_url = "{stub.base_url}/v1"\nmodel = "m"\n')
        proc = run_cli("replay", str(path), "-p", "stub", "--providers-file", str(providers),
                       "--record-mode", "once", "--cassettes", str(cassettes), "--out", str(out),
                       "--no-progress")
        assert stub.requests == []  # refused before the first call, not at line 19,998
    assert_one_clear_line(proc, f"{path}:19998:", "unknown role 'wizard'", "expected one of")
    assert not out.parent.exists() and not cassettes.exists()


def test_a_dataset_changed_under_a_lazy_replay_is_one_clear_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{n}", "messages": [
        {"role": "user", "content": "hi"}]}) + "\n" for n in range(3)))
    lazy = load_dataset(path, lazy=True)
    path.write_text(json.dumps({"id": "other", "messages": [{"role": "user", "content": "hi"}]}))
    with pytest.raises(DatasetError, match=r"d\.jsonl: changed while being replayed.*'other'"):
        list(lazy)


def allocated(action) -> tuple[int, int]:
    """Bytes still allocated after `action()` (its result held) and the peak while it ran."""
    tracemalloc.start()
    try:
        kept = action()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return current, peak


def test_a_lazy_dataset_holds_an_index_not_its_conversations(tmp_path):
    path = tmp_path / "many.jsonl"
    with path.open("w") as fh:  # 40,000 turns with the dataset's replies
        for n in range(10_000):
            fh.write(json.dumps({"id": f"c{n}", "messages": [
                m for k in range(4) for m in (
                    {"role": "user", "content": f"Question {k} of dialogue {n}, at some length."},
                    {"role": "assistant", "content": f"An answer to question {k}. " * 8})]}) + "\n")
    held, _ = allocated(lambda: load_dataset(path))
    indexed, index_peak = allocated(lambda: load_dataset(path, lazy=True))
    lazy = load_dataset(path, lazy=True)
    _, walk_peak = allocated(lambda: sum(len(c.messages) for c in lazy))
    # holding them all costs tens of MB; the index and one conversation at a time, a fraction
    assert indexed < held / 10, (indexed, held)
    assert index_peak < held / 4 and walk_peak < held / 4, (index_peak, walk_peak, held)
