"""The example notebook runs top to bottom and renders the app inline."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


@pytest.mark.slow
def test_notebook_executes_and_renders_the_app(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("CAPTIONER_MODEL", str(tiny_checkpoint))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[2].outputs)
    assert len(printed.strip().splitlines()) == 4  # one default caption, then three scored ones
    launch_outputs = notebook.cells[3].outputs
    html = "".join(o.get("data", {}).get("text/html", "") for o in launch_outputs)
    assert "<iframe" in html and "127.0.0.1" in html
