"""notebooks/engine_tour.ipynb runs top to bottom, so the tour of the engine never rots.

Executed by nbclient in a Jupyter kernel of this very interpreter (the venv's python: jupyter_client
starts a kernelspec whose command is 'python' with sys.executable). A cell that raises makes
nbclient raise CellExecutionError, and the test fails; missing nbclient/nbformat/ipykernel fail
it too rather than skipping it (imported inside the test, so that the rest of the suite still runs).
"""
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "engine_tour.ipynb"


def test_engine_tour_notebook_runs_and_plots_memory():
    import nbformat  # requirements.txt: nbformat, nbclient, ipykernel
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises nbclient.exceptions.CellExecutionError if any cell fails

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "through a run:" in text  # the leased model answered
    assert '"capability": "classify"' in text and '"status": "ok"' in text  # the run record was read
    assert any("image/png" in o.get("data", {}) for o in outputs)  # memory over time was plotted
