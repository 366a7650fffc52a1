"""Headless Chromium driving JupyterLab as a person does: the browser test and `make screenshots`.

Debian's `chromium` and `chromium-driver` (apt-get), driven by selenium with selenium-manager kept
offline: nothing downloads a browser. Measured here (2026-12): selenium 4.51 is 35 MB installed and
starts Chromium + loads a page in ~2.0 s; playwright 1.65 is 167 MB (it bundles node) and takes ~3.2 s.

LabPage works through the page only: clicks, key presses and the menus, never the kernel API, so
what it checks is what a person sees (widget bars, images, tables, dialogs).
"""

import io
import os
import shutil
import time
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium.chromedriver")
WINDOW = (1400, 900)
MAX_PNG_BYTES = 200_000  # README pictures stay small

# What JupyterLab draws, by CSS class (JupyterLab 4)
CODE_CELL = ".jp-Notebook .jp-CodeCell"
TOAST = ".Toastify__toast"  # a notification popup, e.g. "Would you like to get notified about official Jupyter news?"
DIALOG = ".jp-Dialog"  # a modal dialog (kernel choice, "file changed on disk", ...)
WIDGET_PROGRESS = ".jp-OutputArea-output .widget-hprogress"  # an ipywidgets bar (tqdm.notebook), not text
IMAGE_OUTPUT = ".jp-OutputArea-output img"
TABLE_OUTPUT = ".jp-OutputArea-output table"


def find_browser() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) paths on PATH, or None for each one missing."""
    return (next(filter(None, map(shutil.which, BROWSERS)), None),
            next(filter(None, map(shutil.which, DRIVERS)), None))


def unavailable_reason() -> str | None:
    """One line saying why no headless browser can be had here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements.txt)"
    browser, driver = find_browser()
    if not (browser and driver):
        return "no Chromium here (make setup-browser: apt-get install chromium chromium-driver)"
    return None


def start_browser(width: int = WINDOW[0], height: int = WINDOW[1]):
    """Headless Chromium in a selenium session; the caller quits it."""
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    # Leaving a lab page with edited notebooks asks "leave the page?": yes (nothing of the lab's is saved)
    options.unhandled_prompt_behavior = "accept"
    # --no-sandbox: CI and containers run as root, where Chromium's sandbox refuses to start
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    session = webdriver.Chrome(options=options, service=Service(driver))
    # The page itself (not the window) gets exactly this size, so screenshots are the same everywhere
    session.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return session


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition()` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def small_png(png: bytes, path, max_width: int = 1200, max_bytes: int = MAX_PNG_BYTES,
              max_height: int | None = None) -> Path:
    """Save a screenshot as an optimised PNG no wider than max_width (its top max_height pixels, if given),
    shrinking until under max_bytes."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if max_height and image.height > max_height:
        image = image.crop((0, 0, image.width, max_height))
    width = min(max_width, image.width)
    while True:
        shown = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        # An adaptive 256-colour palette: screenshots are flat UI colours, so this is near-lossless and small
        buffer = io.BytesIO()
        shown.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes or width <= 400:
            break
        width = int(width * 0.85)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


class LabPage:
    """One JupyterLab browser tab on a LabServer: open notebooks, edit a literal, Run All, read outputs."""

    def __init__(self, driver, server):
        self.driver, self.server = driver, server

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def count(self, selector: str) -> int:
        return self.js("return document.querySelectorAll(arguments[0]).length", selector)

    def texts(self, selector: str) -> list[str]:
        return self.js("return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", selector)

    def open(self, path: str, ready_selector: str, timeout: float = 120):
        """Load a lab URL (e.g. /lab/tree/notebooks/x.ipynb) and wait until `ready_selector` is drawn."""
        # reset: a clean workspace, so the page holds this document alone (not the tabs of earlier pages)
        self.driver.get(self.server.url(path) + "&reset")
        wait_for(lambda: self.count(ready_selector), timeout, f"{ready_selector} on {path}")

    def open_notebook(self, name: str, timeout: float = 120):
        self.open(f"/lab/tree/notebooks/{name}", CODE_CELL, timeout)
        wait_for(lambda: self.kernel_status() == "idle", timeout, f"the kernel of {name} to start")

    def popups(self) -> list[str]:
        """The text of every notification toast and dialog on the page (none on a clean first start)."""
        return self.texts(f"{TOAST}, {DIALOG}")

    def kernel_status(self) -> str:
        return self.js("const e = document.querySelector('.jp-Notebook-ExecutionIndicator');"
                       "return e ? e.getAttribute('data-status') : ''") or ""

    def prompts(self) -> list[str]:
        """Each code cell's input prompt: '[ ]:' not run, '[*]:' running or queued, '[7]:' done."""
        # textContent, not innerText: cells scrolled out of view are not rendered (content-visibility)
        return self.js("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim())",
                       f"{CODE_CELL} .jp-InputPrompt")

    def set_literal(self, name: str, value: str):
        """Edit `name = <literal>` in the parameters cell by hand: click after the literal, erase it, type."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        # The cell tagged `parameters` is the notebooks' first code cell (tests/test_notebooks.py); JupyterLab
        # may redraw it while the page settles, so it is looked up afresh each time, never held
        cell = f"document.querySelector('{CODE_CELL}')"
        # Where the literal ends on screen (before any trailing `# comment`) and how many characters it has
        def find():  # asked afresh on every try: the cell may be redrawn
            return self.js(r"""
            const [cell, name] = [CELL, arguments[0]];
            if (!cell) return null;
            for (const line of cell.querySelectorAll('.cm-line')) {
              const text = line.textContent, m = text.match(new RegExp('^' + name + '\\s*=\\s*'));
              if (!m) continue;
              // the literal ends at a `#` outside quotes (its help comment), less trailing spaces
              let end = text.length, quote = null;
              for (let i = m[0].length; i < text.length; i++) {
                const c = text[i];
                if (quote) { if (c === '\\') i++; else if (c === quote) quote = null; }
                else if (c === '"' || c === "'") quote = c;
                else if (c === '#') { end = i; break; }
              }
              while (end > m[0].length && text[end - 1] === ' ') end--;
              const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
              let offset = 0, node;
              while ((node = walker.nextNode())) {
                if (offset + node.length >= end) {
                  const range = document.createRange();
                  range.setStart(node, end - offset - 1); range.setEnd(node, end - offset);
                  const r = range.getBoundingClientRect(), l = line.getBoundingClientRect();
                  return {x: r.right - l.left - 1, y: r.top + r.height / 2 - l.top, n: end - m[0].length, line};
                }
                offset += node.length;
              }
            }
            return null;""".replace("CELL", cell), name)
        found = wait_for(find, 30, f"a line `{name} = ...` in the parameters cell")
        line = found["line"]
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", line)
        # selenium's offsets count from the element's centre
        size = line.size
        ActionChains(self.driver).move_to_element_with_offset(
            line, found["x"] - size["width"] / 2, found["y"] - size["height"] / 2).click().perform()
        ActionChains(self.driver).send_keys(Keys.BACKSPACE * found["n"] + value).perform()
        # CodeMirror redraws the line as it changes: read the cell's lines afresh
        wait_for(lambda: self.js(f"return [...({cell} || document).querySelectorAll('.cm-line')].some("
                                 "l => l.textContent.startsWith(arguments[0]))", f"{name} = {value}"), 30,
                 f"the edited line `{name} = {value}`")

    def menu(self, menu: str, item: str):
        """Click a main-menu entry, e.g. menu("Run", "Run All Cells")."""
        bar = [e for e in self.driver.find_elements("css selector", ".lm-MenuBar-item") if e.text.strip() == menu]
        bar[0].click()
        entry = wait_for(lambda: [e for e in self.driver.find_elements("css selector", ".lm-Menu-item")
                                  if e.is_displayed() and e.text.split("\n")[0].strip() == item], 10,
                         f"the menu entry {menu} > {item}")
        entry[0].click()

    def run_all(self):
        self.menu("Run", "Run All Cells")
        wait_for(lambda: any(p == "[*]:" for p in self.prompts()), 30, "Run All Cells to start")

    def finished(self) -> bool:
        """Every code cell has run (a number in its prompt) and the kernel is idle."""
        prompts = self.prompts()
        return bool(prompts) and all(p[1:-2].isdigit() for p in prompts) and self.kernel_status() == "idle"

    def errors(self) -> list[str]:
        """A failed cell's traceback, as JupyterLab shows it."""
        return [t for t in self.texts(".jp-OutputArea-output") if "Traceback (most recent call last)" in t]

    def wait_finished(self, timeout: float, on_progress=None):
        """Wait for Run All to end; on_progress(page) is called once when a widget bar first shows."""
        seen_bar, deadline = False, time.monotonic() + timeout
        while time.monotonic() < deadline:
            if errors := self.errors():
                raise RuntimeError(f"a cell failed: {errors[0][-600:]}")
            if not seen_bar and self.count(WIDGET_PROGRESS):
                seen_bar = True
                if on_progress:
                    on_progress(self)
            if self.finished():
                return seen_bar
            time.sleep(0.5)
        raise TimeoutError(f"Run All not finished after {timeout:.0f} s; prompts {self.prompts()}")

    def scroll_to(self, selector: str, index: int = -1, block: str = "center"):
        self.js(
            f"const all = document.querySelectorAll(arguments[0]); all[{index} < 0 ? all.length + {index} : {index}]"
            ".scrollIntoView({block: arguments[1]})",
            selector,
            block,
        )
        time.sleep(0.3)  # let JupyterLab render the cells scrolled into view

    def screenshot(self, path, box=None, max_height: int | None = None, **kwargs) -> Path:
        """The window, or the part of it inside box ([left, top, right, bottom] in pixels), as a small PNG
        cut at max_height. A box, not an element: JupyterLab redraws cells as they scroll, so an element
        handle can go stale between finding it and capturing it (see element_box)."""
        png = self.driver.get_screenshot_as_png()
        if box is not None:
            from PIL import Image

            buffer = io.BytesIO()
            Image.open(io.BytesIO(png)).crop(tuple(round(v) for v in box)).save(buffer, format="PNG")
            png = buffer.getvalue()
        return small_png(png, path, max_height=max_height, **kwargs)

    def element_box(self, find_js: str, *args, timeout: float = 60):
        """Scroll the element `find_js` returns (a script body ending in `return element`) to the top of
        the window and return its visible box, finding it afresh until it is drawn."""
        script = f"const element = (() => {{ {find_js} }})(); if (!element) return null;" + """
            const r = element.getBoundingClientRect();
            // an output not drawn yet (its cell off screen) has no size: bring its cell into view first
            const target = r.height > 0 ? element : (element.closest('.jp-Cell') || element);
            if (r.height === 0 || r.top < 0 || r.top > innerHeight * 0.3) {
              target.scrollIntoView({block: 'start'}); return null; }
            return r.width > 0 && r.height > 0 ? [r.left, r.top, r.right, Math.min(r.bottom, innerHeight)] : null;"""
        return wait_for(lambda: self.js(script, *args), timeout, "an element to screenshot")

    def resize(self, width: int, height: int):
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.5)  # JupyterLab lays itself out again

    def images_loaded(self, selector: str = "img") -> list[int]:
        """naturalWidth of each image matching selector: 0 for one that failed to decode."""
        return self.js(
            "return [...document.querySelectorAll(arguments[0])].map(i => i.complete ? i.naturalWidth : 0)", selector
        )
