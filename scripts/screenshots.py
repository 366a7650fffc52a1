"""The README's pictures, regenerated: `make screenshots` (python -m scripts.screenshots).

Taken in headless Chromium by the code the browser test uses (lab_utils.core.browser), from real runs:
  lab.png           JupyterLab with notebooks/sft_alpaca.ipynb mid-run, its training widget bar moving
  grpo_rewards.png  the GRPO notebook's reward curves (SFT warm-up, then GRPO steps)
  vision_table.png  the vision notebook's before/after answers
  batch_report.png  the report.html of the batch that made those runs

The runs go through scripts.batch (configs/batch/screenshots.yaml, shortened demos) into
outputs/screenshots/ inside the repo, where JupyterLab can open the executed notebooks.
`--reuse` takes the pictures from an earlier batch without running it again (after, say,
`LAB_OUTPUT_DIR=outputs/screenshots python -m scripts.batch configs/batch/screenshots.yaml --resume`).
Each PNG stays under ~200 KB.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from lab_utils.core import browser
from lab_utils.core.browser import CODE_CELL, WIDGET_PROGRESS, LabPage
from lab_utils.core.jupyter_lab import DEFAULT_URL, LabServer
from lab_utils.core.paths import REPO_ROOT

IMAGES_DIR = REPO_ROOT / "docs" / "images"
BATCH_FILE = REPO_ROOT / "configs" / "batch" / "screenshots.yaml"
# Inside the repo (and git-ignored): JupyterLab serves only the repo, and the executed notebooks must open in it
OUTPUTS = REPO_ROOT / "outputs" / "screenshots"
# The live run shown mid-training: long enough to catch its bar part-way, short enough to finish soon after
LIVE_SFT = {"max_steps": "8", "batch_size": "2", "heldout_rows": "2", "max_new_tokens": "8",
            "report_to": "'none'", "run_name": "'screenshot'", "overwrite": "True"}
RUN_TIMEOUT_S = 1800


def run_batch(reuse: bool) -> Path:
    from scripts import batch

    folder = OUTPUTS / "batch" / "screenshots"
    if not (reuse and (folder / "report.html").exists()):
        os.environ["LAB_OUTPUT_DIR"] = str(OUTPUTS)
        if batch.main([str(BATCH_FILE), "--overwrite"]) != 0:
            sys.exit(f"[screenshots] a batch run failed; see {folder / 'report.html'}")
    return folder


def bar_fraction(page: LabPage, label: str = "train") -> float:
    """How far the widget bar labelled `label` is, 0..1 (its value over its max, as ipywidgets draws it)."""
    width = page.js("""
        for (const box of document.querySelectorAll('.jp-OutputArea-output .widget-hbox')) {
          const bar = box.querySelector('.widget-hprogress .progress-bar');
          if (bar && box.textContent.trim().startsWith(arguments[0])) return bar.style.width;
        }
        return '';""", label)
    return float(width.rstrip("%")) / 100 if width and width.endswith("%") else 0.0


def live_lab(page: LabPage, out: Path):
    """sft_alpaca edited and run in the lab, pictured when its training bar is part-way."""
    page.open(DEFAULT_URL, ".jp-DirListing-item")
    page.open_notebook("sft_alpaca.ipynb")
    for name, value in LIVE_SFT.items():
        page.set_literal(name, value)
    page.run_all()
    browser.wait_for(lambda: 0.2 <= bar_fraction(page) < 1, RUN_TIMEOUT_S, "the training bar part-way", 0.25)
    page.scroll_to(WIDGET_PROGRESS, block="center")
    print(f"[screenshots] {page.screenshot(out / 'lab.png')}")  # the run stops with the server


def cell_output(page: LabPage, notebook: str, source: str, selector: str):
    """The window box of the output holding a `selector` element (img, table) of the executed notebook's
    code cell whose source is `source` (or a call of it)."""
    page.open(f"/lab/tree/{notebook}", CODE_CELL)
    find = """
        const [source, selector] = arguments;
        for (const cell of document.querySelectorAll('.jp-Notebook .jp-CodeCell')) {
          const text = (cell.querySelector('.cm-content') || {textContent: ''}).textContent.trim();
          const output = cell.querySelector('.jp-OutputArea-output:has(' + selector + ')');
          if ((text === source || text.startsWith(source + '(')) && output) return output;
        }
        return null;"""
    return page.element_box(find, source, selector)


def pictures(page: LabPage, batch_dir: Path, out: Path):
    relative = batch_dir.relative_to(REPO_ROOT)
    rewards = cell_output(page, f"{relative}/grpo_gsm8k/grpo_gsm8k.ipynb", "plots.plot_reward_curves", "img")
    print(f"[screenshots] {page.screenshot(out / 'grpo_rewards.png', rewards, max_width=900)}")
    table = cell_output(page, f"{relative}/sft_vision/sft_vision.ipynb", "table", "table")
    print(f"[screenshots] {page.screenshot(out / 'vision_table.png', table, max_height=520, max_width=900)}")
    page.driver.get((batch_dir / "report.html").as_uri())
    browser.wait_for(lambda: page.count("table") and all(page.images_loaded("img")), 30, "the batch report")
    page.resize(browser.WINDOW[0], min(2400, page.js("return document.body.scrollHeight") + 20))  # the whole page
    print(f"[screenshots] {page.screenshot(out / 'batch_report.png')}")
    page.resize(*browser.WINDOW)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="picture an earlier batch instead of running it again")
    parser.add_argument("--out", type=Path, default=IMAGES_DIR, help="where the PNGs go (default docs/images/)")
    args = parser.parse_args(argv)
    if reason := browser.unavailable_reason():
        sys.exit(f"[screenshots] {reason}")
    started = time.monotonic()
    batch_dir = run_batch(args.reuse)
    env = {**os.environ, "LAB_OUTPUT_DIR": str(OUTPUTS), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.pop("LAB_PROGRESS", None)  # widget bars, as a person sees them
    driver = browser.start_browser()
    try:
        with LabServer(OUTPUTS / "lab", env) as server:
            page = LabPage(driver, server)
            pictures(page, batch_dir, args.out)
            live_lab(page, args.out)
    finally:
        driver.quit()
    print(f"[screenshots] done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
