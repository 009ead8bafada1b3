"""Cassettes harness writes replay under stock vcrpy and pytest-recording, and vice versa."""

from __future__ import annotations

import json

import httpx
import pytest
import vcr
import yaml
from conftest import shared_fixture, stub_providers

from harness import replay
from harness.cassettes import read_cassette, vcr_config, vcr_json_body_matcher, write_cassette


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


# Strings a YAML 1.1 reader and JSON could read differently: line breaks YAML folds (NEL, LS,
# PS), characters it refuses raw (DEL, C1 controls, BOM, noncharacters), YAML syntax and
# words it would type (yes, null, 1e-05), escapes, astral characters.
TRICKY = ["plain", "", "yes", "no", "null", "~", "1e-05", "0x1f", "012", "- item", "key: value",
          "# not a comment", "'single' \"double\" \\back\\slash", "line\nbreak\r\n\ttab",
          "nel\x85ls\u2028ps\u2029", "del\x7f c1\x80\x9f nbsp\xa0", "bom\ufeff nonchar\ufffe\uffff",
          "nul\x00 bell\x07 esc\x1b", "emoji \U0001f600 max \U0010ffff", "“curly” — ünïcødé 漢字",
          "{[,]}&*!|>%@`", "trailing space ", " leading", "---", "..."]


def _exchange(text: str) -> dict:
    return {"request": {"body": json.dumps({"prompt": text}, ensure_ascii=False),
                        "headers": {"x-note": [text]}, "method": "POST",
                        "uri": "https://api.example.com/v1/chat/completions"},
            "response": {"body": {"string": text}, "headers": {"content-type": ["text/plain"]},
                         "status": {"code": 200, "message": text}}}


def test_harness_yaml_reads_the_same_as_yaml_and_as_json(tmp_path):
    from vcr.serializers import yamlserializer

    interactions = [_exchange(text) for text in TRICKY]
    path = tmp_path / "tricky.yaml"
    write_cassette(path, interactions)
    raw = path.read_bytes()
    assert raw.startswith(b"{")  # flow style, so harness can read it as JSON
    readings = {
        "libyaml": yaml.load(raw, Loader=yaml.CSafeLoader),
        "pure-python yaml": yaml.load(raw.decode(), Loader=yaml.SafeLoader),
        "vcrpy": yamlserializer.deserialize(raw.decode()),
        "json": json.loads(raw),
    }
    for reader, data in readings.items():
        assert data["interactions"] == interactions, reader
    assert [i.response_body.decode() for i in read_cassette(path)] == TRICKY


def test_what_json_cannot_hold_is_written_in_block_style(tmp_path):
    binary = {**_exchange("x"), "response": {**_exchange("x")["response"],
                                             "body": {"string": b"\x89PNG\xff"}}}
    floats = {**_exchange("y"), "parsed": {"temperature": 1e-05}}
    for name, interaction in [("binary", binary), ("float", floats)]:
        path = tmp_path / f"{name}.yaml"
        write_cassette(path, [interaction])
        assert not path.read_bytes().startswith(b"{"), name
        (data,) = yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)["interactions"]
        assert data == interaction, name
    assert read_cassette(tmp_path / "binary.yaml")[0].response_body == b"\x89PNG\xff"


def test_cassettes_vcrpy_wrote_in_block_style_read_the_same(tmp_path):
    from vcr.serializers import yamlserializer

    interactions = [_exchange(text) for text in TRICKY]
    ours, theirs = tmp_path / "ours.yaml", tmp_path / "theirs.yaml"
    write_cassette(ours, interactions)
    theirs.write_text(yamlserializer.serialize({"interactions": interactions, "version": 1}))
    assert not theirs.read_bytes().startswith(b"{")
    assert read_cassette(theirs) == read_cassette(ours)
