"""Regression over the committed cassettes: replies, finish reasons and tokens must not drift.

The workflow: `tests/baselines/demo.jsonl` is the committed results of the demo replay. This
test replays the committed cassettes offline with the network blocked (pytest-recording's
block_network, not even loopback) and fails with a readable diff when anything changed.
After a deliberate re-recording, refresh the baseline with

    python -m harness replay datasets/demo.jsonl --out tests/baselines/demo.jsonl

and review its diff in the pull request like any other change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from conftest import ROOT

from harness import compare, load_dataset, load_providers_file, replay, results
from harness.providers import resolve

BASELINE = ROOT / "tests" / "baselines" / "demo.jsonl"
DATASET = ROOT / "datasets" / "demo.jsonl"
NO_HOST = ["(?!)"]  # a regex no host matches: not even 127.0.0.1


def demo_providers(cassette_dir: Path):
    names = sorted(p.name for p in (cassette_dir / "demo").iterdir()
                   if p.is_dir() and not p.name.startswith("judge-"))
    return resolve(names, load_providers_file(ROOT / "harness.toml"))


def check_against_baseline(cassette_dir: Path) -> None:
    current = replay(load_dataset(DATASET), demo_providers(cassette_dir),
                     cassette_dir=cassette_dir, progress=False)
    changes = compare.diff(results.load(BASELINE), current)
    assert changes.empty, (
        f"{len(changes)} rows drifted from {BASELINE.relative_to(ROOT)}:\n"
        + compare.describe(changes)
    )


@pytest.mark.block_network(allowed_hosts=NO_HOST)
def test_committed_cassettes_match_the_baseline():
    check_against_baseline(ROOT / "cassettes")


@pytest.mark.block_network(allowed_hosts=NO_HOST)
def test_a_changed_cassette_fails_with_a_readable_diff(tmp_path):
    shutil.copytree(ROOT / "cassettes", tmp_path / "cassettes")
    cassette = tmp_path / "cassettes" / "demo" / "local-smollm2-anthropic" / "name-memory.yaml"
    cassette.write_text(cassette.read_text().replace("end_turn", "max_tokens", 1))
    with pytest.raises(AssertionError) as failure:
        check_against_baseline(tmp_path / "cassettes")
    message = str(failure.value)
    assert "1 rows drifted" in message
    assert "name-memory turn 1 local-smollm2-anthropic: finish_reason" in message
    assert "finish_reason: 'stop' -> 'length'" in message


def _cassette_dir() -> str:
    return str(ROOT / "cassettes" / "demo" / "stub-cohere-v2")


@pytest.fixture
def vcr_cassette_dir() -> str:
    return _cassette_dir()


@pytest.mark.vcr("capital-followup.yaml")
def test_pytest_recording_replays_a_committed_cassette_with_the_harness_matcher():
    """The same files serve a plain httpx client under @pytest.mark.vcr."""
    dataset = load_dataset(DATASET)
    conversation = next(c for c in dataset if c.id == "capital-followup")
    (provider,) = resolve(["stub-cohere-v2"], load_providers_file(ROOT / "harness.toml"))
    for turn in dataset.turns():
        if turn.conversation_id != conversation.id:
            continue
        body = provider.build_body(list(turn.prefix))
        reply = httpx.post(provider.url, json=body)
        assert reply.status_code == 200
        assert reply.json()["message"]["content"][0]["text"].startswith(
            f"stub-command-a reply to turn {turn.turn}")
