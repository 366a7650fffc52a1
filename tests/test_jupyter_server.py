"""The interactive path, exercised: JupyterLab started headless, a notebook run through its kernel API.

Not papermill: the test starts `jupyter lab` the way `make lab` does (the `lab_server` fixture in
conftest.py: loopback, a random port, a token, no browser), asks its REST API for a kernel, sends a
real notebook's code cells over the kernel's websocket channel one by one, as the JupyterLab frontend does, and
checks what came back: printed text, figures, the cell's result, the files the run wrote.
Then it asks the same kernel how it draws progress (widgets: a Jupyter frontend is there).
"""

import asyncio
import json
import re
import time
import uuid

import pytest

from lab_utils.core.notebooks import KERNEL_NAME, NOTEBOOKS_DIR, code_cells, read_notebook

CELL_TIMEOUT_S = 120
# Small parameters, injected after the parameters cell as papermill would (a synthetic 96x96 image)
SMALL_SVD = 'image = "synthetic"\nmax_side = 96\ngrid_ranks = [1, 4]\nrun_name = "server"\n'

pytestmark = pytest.mark.jupyter  # a real JupyterLab server and kernel, driven over its API


def execute_request(code: str, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "test",
                       "session": session, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}


async def run_cells(url: str, cells: list[str], session: str) -> list[list[dict]]:
    """Execute each cell in turn over the kernel's websocket; the iopub outputs of each."""
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(url)
    results = []
    try:
        for code in cells:
            request = execute_request(code, session)
            connection.write_message(json.dumps(request))
            outputs, idle, replied = [], False, False
            while not (idle and replied):
                text = await asyncio.wait_for(connection.read_message(), CELL_TIMEOUT_S)
                assert text is not None, "the kernel's websocket closed"
                message = json.loads(text)
                if message["parent_header"].get("msg_id") != request["header"]["msg_id"]:
                    continue  # a message about something else (e.g. the kernel starting)
                kind = message["msg_type"]
                if kind in ("stream", "display_data", "execute_result", "error"):
                    outputs.append({"type": kind, **message["content"]})
                idle = idle or (kind == "status" and message["content"]["execution_state"] == "idle")
                replied = replied or kind == "execute_reply"
            results.append(outputs)
    finally:
        connection.close()
    return results


def text_of(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o["type"] == "stream")


def errors_in(results) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for outputs in results for o in outputs if o["type"] == "error"]


@pytest.mark.notebook
def test_a_notebook_runs_through_jupyterlabs_kernel_api(lab_server, tmp_path):
    # JupyterLab itself is served (what `make lab` opens), at the notebooks folder
    status, page = lab_server.request("GET", "/lab/tree/notebooks")
    assert status == 200 and "jupyterlab" in page.lower()
    notebook = NOTEBOOKS_DIR / "teach_svd.ipynb"
    kernel_name = read_notebook(notebook)["metadata"]["kernelspec"]["name"]
    assert kernel_name == KERNEL_NAME  # the kernel papermill uses is the one JupyterLab opens the notebook with
    assert kernel_name in lab_server.request("GET", "/api/kernelspecs")[1]["kernelspecs"]

    status, kernel = lab_server.request("POST", "/api/kernels", {"name": kernel_name, "path": "notebooks"})
    assert status == 201
    cells = code_cells(notebook)
    cells.insert(1, SMALL_SVD)  # right after the parameters cell, as papermill injects
    cells.append("from lab_utils.core.progress import progress_bar, progress_mode\n"
                 "with progress_bar(total=3, desc='check') as bar:\n    bar.update(3)\nprint(progress_mode())")
    session = uuid.uuid4().hex
    started = time.monotonic()
    results = asyncio.run(run_cells(lab_server.channels_url(kernel["id"], session), cells, session))
    elapsed = time.monotonic() - started

    assert not errors_in(results), errors_in(results)
    printed = "".join(text_of(outputs) for outputs in results)
    assert "image shape: (96, 96)" in printed
    # ranks 0..96 of the 96x96 image, measured error == Eckart-Young up to rounding
    assert re.search(r"largest \|measured - Eckart-Young\| over all 97 ranks: \d\.\d+e-1\d", printed)
    figures = [o for outputs in results for o in outputs if o["type"] == "display_data" and "image/png" in o["data"]]
    assert len(figures) >= 4, "the spectrum, reconstructions, error and storage plots are shown inline"
    grid_table = next(o for o in results[-2] if o["type"] == "execute_result")["data"]["text/plain"]
    assert "eckart_young" in grid_table and "compression_ratio" in grid_table  # the last cell shows the rank grid
    assert len(grid_table.strip().splitlines()) == 1 + len([1, 4])  # a header, then one row per grid rank
    metrics = json.loads((tmp_path / "outputs" / "teach_svd" / "server" / "metrics.json").read_text())
    assert metrics["full_rank"] == 96 and metrics["break_even_rank"] > 0
    assert metrics["max_gap_error_vs_eckart_young"] < 1e-9
    # progress in a kernel that JupyterLab started: a widget bar (ipywidgets installed), not text
    assert text_of(results[-1]).strip().splitlines()[-1] == "widgets"
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in results[-1])
    print(f"[test] {len(cells)} cells through the kernel API in {elapsed:.1f} s")

    assert lab_server.request("DELETE", f"/api/kernels/{kernel['id']}")[0] == 204
