"""Every cassette lands inside cassettes/<dataset>/<provider>/, whatever the names hold."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import stub_providers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cassettes import cassette_path
from harness.datasets import load_dataset
from harness.replay import replay

# the known escapes and the names an OS treats specially, then anything at all
SPECIAL = st.sampled_from(["", ".", "..", "...", "/", "/etc/passwd", "../..", "a/../../b",
                           "C:\\x", "con", "NUL.txt", "com1", ".hidden", "trailing.", "\x00",
                           "a" * 300, "~", "$HOME"])
NAMES = st.one_of(SPECIAL, st.text(min_size=0, max_size=120))


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=NAMES, provider=NAMES, conversation=NAMES,
       serializer=st.sampled_from(["yaml", "json"]))
def test_a_cassette_path_stays_in_its_folder(tmp_path, dataset, provider, conversation, serializer):
    root = tmp_path / "cassettes"
    path = cassette_path(root, dataset, provider, conversation, serializer)
    assert path.parent.parent.parent == root
    assert _inside(path, root / path.parent.parent.name / path.parent.name)
    for part in path.relative_to(root).parts:
        assert part not in ("", ".", "..") and not part.startswith(".")
        assert "/" not in part and "\\" not in part and "\x00" not in part
        assert len(part.encode()) < 255
    assert path.name.endswith(f".{serializer}")


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(NAMES, NAMES, NAMES), b=st.tuples(NAMES, NAMES, NAMES))
def test_different_names_never_share_a_cassette(a, b):
    if a != b:
        assert cassette_path("c", *a) != cassette_path("c", *b)


def test_dot_stems_and_a_provider_named_dotdot_record_inside_the_folder(tmp_path, stub):
    """The escapes found by hand: datasets `...jsonl` / `..jsonl`, a provider named `..`."""
    project = tmp_path / "project"
    root = project / "cassettes"
    project.mkdir()
    provider = stub_providers(stub.base_url)[0].model_copy(update={"name": ".."})
    for stem in ("..", "."):
        data = project / f"{stem}.jsonl"
        data.write_text(json.dumps({"id": "..", "messages": [
            {"role": "user", "content": "hi"}]}) + "\n")
        frame = replay(load_dataset(data), [provider], record_mode="once", cassette_dir=root,
                       progress=False)
        assert (frame["status"] == "ok").all()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".yaml"]
    assert len(written) == 2
    assert all(p.resolve().is_relative_to(root.resolve()) and len(p.relative_to(root).parts) == 3
               for p in written)
