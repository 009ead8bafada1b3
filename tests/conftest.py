from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cassettes
from harness.datasets import from_records
from harness.providers import Provider
from harness.stub_server import StubServer

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


def shared_fixture(*parts: str) -> Path:
    """A file under ../shared/fixtures, or a clean skip where that folder is absent."""
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/fixtures is absent)")
    return path


def stub_providers(base_url: str, api_key_env: str | None = None, *,
                   gemini: bool = False) -> list[Provider]:
    """One provider per wire protocol, all pointing at a stub server (Gemini when asked)."""
    common = {"api_key_env": api_key_env, "params": {"max_tokens": 40}}
    providers = [
        Provider(name="stub-openai", protocol="openai", base_url=f"{base_url}/v1",
                 model="stub-gpt", **common),
        Provider(name="stub-cohere-v1", protocol="cohere-v1", base_url=f"{base_url}/v1",
                 model="stub-command-r", **common),
        Provider(name="stub-cohere-v2", protocol="cohere-v2", base_url=f"{base_url}/v2",
                 model="stub-command-a", **common),
        Provider(name="stub-anthropic", protocol="anthropic", base_url=f"{base_url}/v1",
                 model="stub-claude", auth_header="x-api-key", auth_scheme="",
                 headers={"anthropic-version": "2023-06-01"}, **common),
    ]
    if gemini:
        providers.append(Provider(
            name="stub-gemini", protocol="gemini", base_url=f"{base_url}/v1beta",
            model="stub-gemini", auth_header="x-goog-api-key", auth_scheme="", **common))
    return providers


SMALL_RECORDS = [
    {"id": "c1", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And its river?"}]},
    {"id": "c2", "messages": [
        {"role": "user", "content": "Tell me a long story with detail."},
        {"role": "user", "content": "Give it a title."}]},
    {"id": "c3", "messages": [
        {"role": "user", "content": "Hello, I am Ada."},
        {"role": "user", "content": "What is my name?"},
        {"role": "user", "content": "Thanks!"}]},
]


def write_questions(path: Path, conversations: int, turns: int) -> Path:
    """A JSONL dataset of numbered questions ("Question T of conversation C please")."""
    path.write_text("".join(json.dumps({"id": f"r{c}", "messages": [
        {"role": "user", "content": f"Question {t} of conversation {c} please"}
        for t in range(1, turns + 1)]}) + "\n" for c in range(conversations)))
    return path


def write_stub_provider(path: Path, base_url: str) -> Path:
    """A providers file with one OpenAI provider `stub` at the stub server `base_url`."""
    path.write_text(f'[providers.stub]\nprotocol = "openai"\nbase_url = "{base_url}/v1"\n'
                    f'model = "stub-gpt"\nparams = {{ max_tokens = 30 }}\n')
    return path


@pytest.fixture
def small_dataset():
    return from_records(SMALL_RECORDS, name="small")


@pytest.fixture
def small_dataset_file(tmp_path) -> Path:
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SMALL_RECORDS), encoding="utf-8")
    return path


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


@pytest.fixture(scope="module")
def vcr_config():
    """pytest-recording matches and scrubs the way harness does."""
    return cassettes.vcr_config()


def pytest_recording_configure(config, vcr):
    vcr.register_matcher("json_body", cassettes.vcr_json_body_matcher)
