"""The notebooks run end to end, offline, and are committed with their outputs."""

from __future__ import annotations

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _text(outputs) -> str:
    return "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     + str(o.get("data", {}).get("text/html", "")) for o in outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_the_outputs_of_one_clean_run(path):
    """Committed executed top to bottom, so a reader sees the tables without running it: no
    error, and no NaN or <NA> where `compare.show` prints a dash."""
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), path.name
    outputs = [o for c in code for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    text = _text(outputs)
    for clutter in ("NaN", "<NA>", "&lt;NA&gt;"):
        assert clutter not in text, (path.name, clutter)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_end_to_end(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = _text(outputs)
    if path.name.startswith("01"):
        assert "rows:" in text and "providers x 26 turns" in text
        assert any("image/png" in o.get("data", {}) for o in outputs)  # the charts
        assert any("text/html" in o.get("data", {}) for o in outputs)  # the styled table
    else:
        assert "0 changed rows out of" in text  # the cassettes match the baseline
        assert "finish_reason: 'stop' -> 'length'" in text
