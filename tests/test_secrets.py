"""No run of 12 or more characters of a secret in any byte harness writes or prints.

Each credential style is recorded through the CLI against the stub server (which echoes
what it was sent, in reply bodies, 401 messages and a response header), replayed offline
from that recording, reported as HTML, and journaled by an interrupted run; then every
file under the test's folder and every byte of stdout and stderr is scanned.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import cli, results
from harness.cassettes import MIN_RUN, scrub_text
from harness.datasets import load_dataset
from harness.providers import join_url, load_providers_file
from harness.replay import replay
from harness.stub_server import StubServer

KEY = "sk-live-7Hq2ZpX9mWvB4nR8tYc3LdKe"  # the credential every style carries
OTHER = "sk-the-server-wants-this-1a2b3c4d"
RECORDS = [
    {"id": "a", "messages": [{"role": "user", "content": "Hello there."},
                             {"role": "user", "content": "And again?"}]},
    {"id": "b", "messages": [{"role": "user", "content": "One more question."}]},
]


@dataclass
class Style:
    """One way a credential reaches harness: a provider table and the env it needs."""

    toml: str
    env: dict[str, str] = field(default_factory=dict)
    server_key: str | None = KEY
    echo: int = 200
    extra: list[str] = field(default_factory=list)  # further forms of the secret to look for


def _table(protocol: str = "openai", base: str = "{base}/v1", **fields: str) -> str:
    lines = [f'protocol = "{protocol}"', f'base_url = "{base}"', 'model = "m"',
             *(f"{k} = {v}" for k, v in fields.items())]
    return "[providers.x]\n" + "\n".join(lines) + "\n"


ENV = {"HARNESS_SECRET_KEY": KEY}
STYLES = {
    "bearer env key": Style(_table(api_key_env='"HARNESS_SECRET_KEY"'), ENV),
    "bare key in Authorization": Style(
        _table(api_key_env='"HARNESS_SECRET_KEY"', auth_scheme='""'), ENV),
    "x-api-key": Style(_table("anthropic", api_key_env='"HARNESS_SECRET_KEY"',
                              auth_header='"x-api-key"', auth_scheme='""',
                              params="{ max_tokens = 20 }"), ENV),
    "api-key": Style(_table(api_key_env='"HARNESS_SECRET_KEY"', auth_header='"api-key"',
                            auth_scheme='""'), ENV),
    "x-goog-api-key": Style(_table(api_key_env='"HARNESS_SECRET_KEY"',
                                   auth_header='"x-goog-api-key"', auth_scheme='""'), ENV),
    "?key= in base_url": Style(_table(base="{base}/v1?key=" + KEY)),
    "user:pass@ in base_url": Style(_table(base="http://ada:" + KEY + "@127.0.0.1:{port}/v1"),
                                    extra=[base64.b64encode(f"ada:{KEY}".encode()).decode()]),
    "literal Authorization in headers": Style(_table(headers=f'{{ Authorization = "Bearer {KEY}" }}')),
    "literal token header": Style(_table(headers=f'{{ "x-custom-token" = "{KEY}" }}')),
    "key in params": Style(_table(params=f'{{ api_key = "{KEY}", max_tokens = 30 }}')),
    "cookie": Style(_table(headers=f'{{ cookie = "lang=en; session={KEY}" }}')),
    "401 echoing the key in body and header": Style(
        _table(api_key_env='"HARNESS_SECRET_KEY"'), ENV, server_key=OTHER),
    "partial echo of 14 characters": Style(_table(api_key_env='"HARNESS_SECRET_KEY"'), ENV,
                                           echo=14),
}


def _runs(secret: str) -> set[bytes]:
    return {secret[i:i + MIN_RUN].encode() for i in range(len(secret) - MIN_RUN + 1)}


def _hits(data: bytes, needles: set[bytes]) -> list[bytes]:
    return [n for n in needles if n in data]


def _written(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, Parquet also as its decoded text (its pages compress)."""
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(folder))] = path.read_bytes()
            if path.suffix == ".parquet":
                text = pd.read_parquet(path).to_json(orient="records")
                out[f"{path.name} (decoded)"] = text.encode()
    return out


@dataclass
class Printed:
    returncode: int
    stdout: str
    stderr: str


@pytest.mark.parametrize("name", sorted(STYLES))
def test_no_run_of_a_secret_in_any_written_or_printed_byte(name, tmp_path, monkeypatch, capfd):
    style = STYLES[name]
    with StubServer(api_key=style.server_key, echo=style.echo) as stub:
        work = tmp_path / "work"
        work.mkdir()
        (work / "harness.toml").write_text(
            style.toml.replace("{base}", stub.base_url).replace("{port}", str(stub.port)))
        (work / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
        common = ["--cassettes", "cass", "-p", "x", "--no-progress", "--history", "reference"]
        monkeypatch.chdir(work)
        for key, value in style.env.items():
            monkeypatch.setenv(key, value)

        def run_cli(*args: str) -> Printed:
            """The CLI's main in this process (a subprocess per call cost minutes here)."""
            code = cli.main(list(args))
            out, err = capfd.readouterr()
            return Printed(code, out, err)

        recorded = run_cli("replay", "chat.jsonl", *common, "--record-mode", "once",
                           "--out", "live.parquet")
        assert recorded.returncode == 0, recorded.stderr
        sent = list(stub.seen)
        assert len(sent) == 3  # every turn reached the server with its credential
        basic = base64.b64encode(f"ada:{KEY}".encode()).decode()
        assert all(KEY in json.dumps(r) or basic in json.dumps(r) for r in sent)  # the real one
        live = results.load(work / "live.parquet")
        if style.server_key == OTHER:
            assert set(live["http_status"]) == {401}
        else:
            assert set(live["status"]) == {"ok"}
            assert live["response"].str.contains("you sent").all()  # the echo reached a row

        offline = run_cli("replay", "chat.jsonl", *common, "--out", "offline.jsonl")
        assert offline.returncode == 0, offline.stderr
        assert len(stub.seen) == 3  # nothing more was sent: it replayed from cassettes
        replayed = results.load(work / "offline.jsonl")
        columns = ["conversation_id", "turn", "response", "status", "http_status", "error"]
        pd.testing.assert_frame_equal(replayed[columns], live[columns])

        results.save(live, work / "live.csv")
        report = run_cli("report", "live.parquet", "--html", "report.html")
        assert report.returncode == 0, report.stderr
        listed = run_cli("providers", "--cassettes", "cass")
        assert listed.returncode == 0 and "x" in listed.stdout, listed.stderr
        compared = run_cli("compare", "live.parquet")
        assert compared.returncode == 0, compared.stderr

        # an interrupted run keeps its journal: that is written too
        providers = load_providers_file(work / "harness.toml")

        class Stop(Exception):
            pass

        def stop(_row):
            raise Stop

        with pytest.raises(Stop):
            replay(load_dataset(work / "chat.jsonl"), [providers["x"]], record_mode="all",
                   cassette_dir=tmp_path / "cass2", journal=work / "j.parquet.journal.jsonl",
                   on_row=stop, progress=False)
        assert (work / "j.parquet.journal.jsonl").exists()
        out, err = capfd.readouterr()
        printed_by_library = Printed(0, out, err)

    needles = set().union(*(_runs(s) for s in [KEY, *style.extra]))
    files = {f: data for f, data in _written(tmp_path).items()
             if f not in ("work/harness.toml", "work/chat.jsonl")}  # the inputs, not written
    assert {"work/live.parquet", "work/offline.jsonl", "work/live.csv", "work/report.html",
            "work/j.parquet.journal.jsonl"} <= set(files)
    assert sum(f.startswith(("work/cass/", "cass2/")) for f in files) >= 3
    printed = {"stdout": b"", "stderr": b""}
    for proc in (recorded, offline, report, listed, compared, printed_by_library):
        printed["stdout"] += proc.stdout.encode()
        printed["stderr"] += proc.stderr.encode()
    leaks = {f: _hits(data, needles) for f, data in {**files, **printed}.items()}
    assert {f: h for f, h in leaks.items() if h} == {}
    print(f"\n{name}: {len(files)} written files + stdout + stderr scanned for "
          f"{len(needles)} runs of the secret: 0 hits")


def test_the_scan_finds_what_it_looks_for(tmp_path):
    """The scanner is not blind: an unscrubbed 12-character piece of the key is found."""
    (tmp_path / "leak.txt").write_text(f"prefix {KEY[5:17]} suffix")
    assert _hits(_written(tmp_path)["leak.txt"], _runs(KEY)) == [KEY[5:17].encode()]


def test_scrub_text_removes_every_12_character_run_and_keeps_the_rest():
    text = f"key {KEY}, tail {KEY[-13:]}, head {KEY[:11]} and words"
    scrubbed = scrub_text(text, [KEY])
    assert not _hits(scrubbed.encode(), _runs(KEY))
    assert scrubbed == f"key <scrubbed>, tail <scrubbed>, head {KEY[:11]} and words"


def test_join_url_keeps_the_query_after_the_path():
    assert join_url("https://h.test/v1?key=abc", "/chat/completions") == \
        "https://h.test/v1/chat/completions?key=abc"
    assert join_url("https://h.test/v1/", "/messages") == "https://h.test/v1/messages"


def test_journal_header_is_a_fingerprint_not_the_settings(tmp_path):
    journal = results.Journal(tmp_path / "j.jsonl", {"providers": [{"headers": {"x": KEY}}]},
                              [KEY])
    journal.append(results.TurnResult(conversation_id="c", turn=1, provider="p"))
    journal.close()
    header = json.loads((tmp_path / "j.jsonl").read_text().splitlines()[0])
    assert header["journal"].startswith("sha256:") and len(header["journal"]) == 71
    again = results.Journal(tmp_path / "j.jsonl", {"providers": [{"headers": {"x": KEY}}]}, [KEY])
    assert len(again.rows) == 1  # the same settings resume it
    with pytest.raises(ValueError, match="other settings"):
        results.Journal(tmp_path / "j.jsonl", {"providers": []}, [KEY])


@settings(max_examples=300, deadline=None)
@given(secrets=st.lists(st.text(min_size=MIN_RUN, max_size=60), min_size=1, max_size=3),
       pieces=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60), st.integers(MIN_RUN, 60)),
                       max_size=4),
       filler=st.text(max_size=40))
def test_scrub_text_leaves_no_run_of_any_secret(secrets, pieces, filler):
    """Whole secrets, slices of them and their neighbours glued together: nothing survives."""
    text = filler
    for which, start, length in pieces:
        secret = secrets[which % len(secrets)]
        text += secret[start:start + length] + filler
    scrubbed = scrub_text(text, secrets)
    for secret in secrets:
        assert not any(secret[i:i + MIN_RUN] in scrubbed for i in range(len(secret) - MIN_RUN + 1))
