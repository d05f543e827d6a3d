"""The walkthrough notebook runs top to bottom on the bundled local model."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "examples" / "walkthrough.ipynb"


@pytest.mark.local_model
@pytest.mark.timeout(900)
def test_walkthrough_notebook_executes(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "tokens" in text  # identity_messages counted
    assert "vanilla vs" not in text  # compare reports the strategy against the baseline
    assert "expert vs vanilla - wins" in text
    markdown = [o for o in outputs if "text/markdown" in o.get("data", {})]
    assert markdown  # the answer rendered as Markdown, and the report
    assert any("image/svg+xml" in o.get("data", {}) for o in outputs)
