"""Cassettes harness writes replay under stock vcrpy and pytest-recording, and vice versa."""

from __future__ import annotations

import httpx
import pytest
import vcr
from conftest import shared_fixture, stub_providers

from harness import replay
from harness.cassettes import read_cassette, vcr_config, vcr_json_body_matcher


def _vcr() -> vcr.VCR:
    config = vcr_config()
    my_vcr = vcr.VCR(record_mode="none", **config)
    my_vcr.register_matcher("json_body", vcr_json_body_matcher)
    return my_vcr


def test_stock_vcrpy_replays_a_harness_cassette(stub, small_dataset, tmp_path):
    replay(small_dataset, stub_providers(stub.base_url)[:1], record_mode="all",
           cassette_dir=tmp_path, progress=False)
    path = tmp_path / "small" / "stub-openai" / "c3.yaml"
    interactions = read_cassette(path)
    stub.__exit__()
    with _vcr().use_cassette(str(path)) as cassette:
        for interaction in interactions:
            # key order and spacing differ from the recording: the JSON matcher still matches
            body = httpx.Request("POST", "http://x", json=interaction.request_json()).content
            response = httpx.post(interaction.uri, content=body,
                                  headers={"content-type": "application/json"})
            assert response.status_code == 200
            assert response.json() == __import__("json").loads(interaction.response_body)
        assert cassette.all_played


def test_vcrpy_refuses_a_request_the_cassette_does_not_hold(stub, small_dataset, tmp_path):
    replay(small_dataset, stub_providers(stub.base_url)[:1], record_mode="all",
           cassette_dir=tmp_path, progress=False)
    path = tmp_path / "small" / "stub-openai" / "c1.yaml"
    (first, *_) = read_cassette(path)
    other = {**first.request_json(), "temperature": 0.5}
    with _vcr().use_cassette(str(path)), pytest.raises(Exception, match="Can't (play back|overwrite)"):
        httpx.post(first.uri, json=other)


def test_harness_reads_what_vcrpy_recorded(tmp_path):
    # a foreign cassette recorded by another project's vcrpy test suite
    path = shared_fixture("cassettes", "together", "oll-together_chat_finish_eos.yaml")
    (interaction,) = read_cassette(path)
    assert interaction.request_json()["model"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert interaction.status == 200
