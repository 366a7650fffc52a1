"""The notebooks as a person sees them: `make lab`'s JupyterLab in headless Chromium, driven through the page.

Each test starts the lab as `make lab` does (the `lab_server` fixture: a first-time user), opens a
notebook, edits literals in its parameters cell by clicking and typing, runs it with Run > Run All
Cells, and checks what is drawn: the training progress as an ipywidgets bar (not the "IProgress not
found" text), plots as images that decoded, tables as HTML tables; and no news popup or other
dialog on the way. The runs are real, only tiny. Screenshots go under the test's tmp folder, and
to $LAB_TEST_ARTIFACTS if set. Without Chromium + chromedriver + selenium the tests skip in one line.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from lab_utils.core import browser
from lab_utils.core.browser import IMAGE_OUTPUT, TABLE_OUTPUT, WIDGET_PROGRESS, LabPage
from lab_utils.core.jupyter_lab import DEFAULT_URL
from tests.helpers import TINY_SFT

UNAVAILABLE = browser.unavailable_reason()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE)),
]

RUN_TIMEOUT_S = 900  # a tiny run takes ~1 min on 2 quiet cores; the CI machine is shared
# As small as the SFT notebook goes: the tiny random Llama, 2 optimizer steps of 2 rows, 2 held-out prompts, 4 new
# tokens (the literals a person types into the parameters cell: the suite's tiny SFT settings, batches of 2)
TINY_EDITS = {**{name: repr(TINY_SFT[name]) for name in ("model", "max_steps", "heldout_rows", "max_new_tokens",
                                                          "max_seq_length", "report_to")},
              "batch_size": "2", "run_name": "'browser'"}


@pytest.fixture(scope="module")
def chromium():
    driver = browser.start_browser()
    yield driver
    driver.quit()


@pytest.fixture
def page(chromium, lab_server):
    return LabPage(chromium, lab_server)


@pytest.fixture
def artifacts(tmp_path):
    """Where screenshots go; copied to $LAB_TEST_ARTIFACTS (CI keeps them) when the test ends."""
    folder = tmp_path / "screenshots"
    yield folder
    keep = os.environ.get("LAB_TEST_ARTIFACTS")
    if keep and folder.is_dir():
        shutil.copytree(folder, Path(keep), dirs_exist_ok=True)


def test_sft_alpaca_edited_and_run_in_jupyterlab(page, tmp_path, artifacts):
    # `make lab` opens on notebooks/, with no first-run popup
    page.open(DEFAULT_URL, ".jp-DirListing-item")
    browser.wait_for(lambda: page.texts(".jp-BreadCrumbs")[0].strip("/ \n") == "notebooks", 30, "notebooks/ shown")
    assert "sft_alpaca.ipynb" in page.texts(".jp-DirListing-itemText")

    page.open_notebook("sft_alpaca.ipynb")
    for name, value in TINY_EDITS.items():
        page.set_literal(name, value)
    page.screenshot(artifacts / "sft_alpaca_edited.png")
    page.run_all()
    saw_bar = page.wait_finished(
        RUN_TIMEOUT_S, on_progress=lambda p: p.screenshot(artifacts / "sft_alpaca_training.png")
    )
    page.screenshot(artifacts / "sft_alpaca_done.png")

    outputs = page.texts(".jp-OutputArea-output")
    assert saw_bar and page.count(WIDGET_PROGRESS) >= 1, "training progress is an ipywidgets bar"
    assert not [t for t in outputs if "IProgress not found" in t]
    widths = page.images_loaded(IMAGE_OUTPUT)
    assert widths and all(w > 100 for w in widths), f"the loss plot is an image that decoded: {widths}"
    headers = page.js(
        "return [...document.querySelectorAll(arguments[0])].map("
        "t => [...t.querySelectorAll('thead th')].map(h => h.textContent.trim()))",
        TABLE_OUTPUT,
    )
    assert any({"prompt", "before", "after"} <= set(h) for h in headers), f"no before/after table in {headers}"
    # The edited values, not the notebook's defaults, are the ones the run used
    run = tmp_path / "outputs" / "sft_alpaca" / "browser"
    params = json.loads((run / "params.json").read_text())
    assert (params["max_steps"], params["batch_size"], params["heldout_rows"]) == (2, 2, 2)
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2
    assert page.popups() == [], "no news popup or other dialog over the lab"
    assert page.texts(".jp-Notification-Status")[0].strip() in ("", "0"), "no notification waiting either"


def test_teach_svd_edited_and_run_in_jupyterlab(page, tmp_path, artifacts):
    page.open_notebook("teach_svd.ipynb")
    page.set_literal("image", "'synthetic'")
    page.set_literal("max_side", "96")
    page.set_literal("run_name", "'browser'")
    page.run_all()
    page.wait_finished(RUN_TIMEOUT_S)
    page.scroll_to(TABLE_OUTPUT)
    page.screenshot(artifacts / "teach_svd_done.png")

    widths = page.images_loaded(IMAGE_OUTPUT)
    assert len(widths) >= 4 and all(w > 100 for w in widths), f"spectrum, reconstructions, error, storage: {widths}"
    assert page.count(TABLE_OUTPUT) >= 1, "the rank grid is an HTML table"
    metrics = json.loads((tmp_path / "outputs" / "teach_svd" / "browser" / "metrics.json").read_text())
    assert metrics["full_rank"] == 96  # the edited max_side, not the default photo size
    assert page.popups() == []


def test_batch_report_renders(chromium, tmp_path, artifacts):
    from scripts import batch

    spec = {
        "name": "browser",
        "defaults": {"timeout": 300},
        "runs": [
            {
                "notebook": "teach_svd",
                "params": {"image": "synthetic", "max_side": 48, "grid_ranks": [1, 4]},
                "grid": {"max_side": [32, 48]},
            }
        ],
    }
    (tmp_path / "browser.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert batch.main([str(tmp_path / "browser.yaml")]) == 0
    report = tmp_path / "outputs" / "batch" / "browser" / "report.html"

    page = LabPage(chromium, server=None)
    chromium.get(report.as_uri())
    browser.wait_for(lambda: page.count("table"), 30, "the report's table")
    page.screenshot(artifacts / "batch_report.png")
    assert page.count("tbody tr") == 2, "one row per run"
    assert page.texts("tbody tr td.status") == ["finished", "finished"]
    widths = page.images_loaded("img")
    assert widths and all(w > 100 for w in widths), f"the report's plots decode: {widths}"
