"""The API as a notebook uses it: names or Providers, a dataset path, harness.toml, dtypes."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import ROOT

from harness import PRESETS, ProviderConfigError, compare, replay
from harness.cassettes import recorded_providers

DEMO = ROOT / "datasets" / "demo.jsonl"
CASSETTES = ROOT / "cassettes"


def test_names_providers_a_mix_and_a_path(monkeypatch):
    monkeypatch.chdir(ROOT)  # harness.toml here declares the stub-* providers, as for the CLI
    by_name = replay(str(DEMO), ["stub-cohere-v1", "local-smollm2"], progress=False)
    # rows and tables keep the order the providers were given in
    assert list(dict.fromkeys(by_name["provider"])) == ["stub-cohere-v1", "local-smollm2"]
    assert list(compare.usage(by_name).index) == ["stub-cohere-v1", "local-smollm2"]
    one = replay(DEMO, PRESETS["local-smollm2"], cassette_dir=CASSETTES, progress=False)
    mixed = replay(DEMO, ["stub-cohere-v1", PRESETS["local-smollm2"]], progress=False)
    pd.testing.assert_frame_equal(mixed, by_name)
    as_text = {"provider": "string"}
    pd.testing.assert_frame_equal(one.astype(as_text), by_name[by_name["provider"] == "local-smollm2"]
                                  .reset_index(drop=True).astype(as_text))
    everything = replay(DEMO, progress=False)  # no providers: every one with cassettes
    assert set(everything["provider"]) == set(recorded_providers(CASSETTES, "demo"))


def test_providers_file_outside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no harness.toml here
    with pytest.raises(ProviderConfigError, match="stub-cohere-v2"):
        replay(DEMO, "stub-cohere-v2", cassette_dir=CASSETTES, progress=False)
    frame = replay(DEMO, "stub-cohere-v2", providers_file=ROOT / "harness.toml",
                   cassette_dir=CASSETTES, progress=False)
    assert len(frame) == 26 and set(frame["status"]) == {"ok"}
    assert frame.attrs["run"]["providers"][0]["model"] == "stub-command-a"


def test_the_progress_bar_keeps_its_final_count(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    replay(DEMO, "stub-cohere-v1")
    assert "26/26" in capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]


def test_one_conversation_and_one_set_of_dtypes(monkeypatch):
    monkeypatch.chdir(ROOT)
    results = replay(DEMO, ["local-smollm2", "stub-cohere-v2"], progress=False)
    thread = compare.conversation(results, "capital-followup")
    assert list(thread["role"][:4]) == ["user", "reference", "reply", "reply"]
    assert list(thread.loc[thread["role"] == "user", "text"]) == [
        "What is the capital of France?", "What river runs through it?",
        "Name one famous bridge over that river."]
    with pytest.raises(KeyError, match="nope"):
        compare.conversation(results, "nope")

    allowed = {"string", "Int64", "Float64", "boolean"}  # all nullable
    changed = results.copy()
    changed.loc[0, "response"] = "other"
    tables = {"results": results, "thread": thread, "side_by_side": compare.side_by_side(results),
              "finish_reasons": compare.finish_reasons(results),
              "diff": compare.diff(results, changed), "empty diff": compare.diff(results, results)}
    for name, table in tables.items():
        assert {str(t) for t in table.dtypes} <= allowed, (name, table.dtypes.to_dict())
