"""Progress in one place: one bar per long step (training, generation, GGUF export, batch runs).

Where the code runs decides how a bar looks (`progress_mode`):
  widgets   a Jupyter kernel with a frontend (JupyterLab, `make lab`): an ipywidgets bar, updated in place
  line      a terminal: one line on stderr, redrawn in place (plain tqdm)
  log       output nobody watches live: a notebook under papermill (`make demo`, batch runs, CI) or
            stderr redirected to a file. No frontend draws widgets there and every redraw would be
            one more line in the log, so a plain line at most every LOG_INTERVAL_S seconds (and at the end).
  off       no bars (LAB_PROGRESS=off)

LAB_PROGRESS=auto|widgets|line|log|off forces one; lab_utils.core.notebooks.execute sets `log` for the
kernels it starts. A notebook run by the papermill command line is recognised by its parent process.

transformers' Trainer, told `disable_tqdm=True`, prints every log record as a dict of
formatted strings (its PrinterCallback: `{'loss': '2.242', ...}` per step); without it, it
draws a bar per evaluation beside the training bar and still prints the dicts.
`show_progress(trainer)` replaces both with one bar whose postfix carries the latest
loss as a number; the records themselves are kept by LossHistory (lab_utils/training/).
"""

import functools
import os
import subprocess
import sys
from pathlib import Path
from lab_utils.core.errors import ConfigError

MODES = ("auto", "widgets", "line", "log", "off")
LOG_INTERVAL_S = 30.0  # in log mode: at most one line per this many seconds per bar
POSTFIX_KEYS = {"loss": "loss", "eval_loss": "eval_loss", "reward": "reward"}  # log record key -> shown as


def in_notebook_kernel() -> bool:
    """True inside an IPython kernel (Jupyter, papermill, VS Code, Colab), False in a terminal or script."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return bool(shell) and "IPKernelApp" in shell.config


def started_by_papermill() -> bool:
    """The kernel's parent is the papermill command line (`papermill in.ipynb out.ipynb`)."""
    try:
        import psutil

        parent = psutil.Process(os.getppid())
        return any("papermill" in part for part in parent.cmdline()[:3])
    except Exception:  # no psutil, no permission, parent gone: assume a live frontend
        return False


def progress_mode() -> str:
    forced = os.environ.get("LAB_PROGRESS", "auto").strip().lower() or "auto"
    if forced not in MODES:
        raise ConfigError(f"LAB_PROGRESS={forced!r}: expected one of {', '.join(MODES)}")
    if forced != "auto":
        return forced
    if in_notebook_kernel():
        if started_by_papermill():
            return "log"
        try:
            import ipywidgets  # noqa: F401  (tqdm's widget bar needs it; pinned in requirements.txt)
        except ImportError:
            return "line"  # a frontend without ipywidgets still renders a redrawn text line
        return "widgets"
    return "line" if sys.stderr.isatty() else "log"


def progress_bar(total=None, desc: str = "", unit: str = "it", initial: int = 0, unit_scale: bool = False):
    """A tqdm bar drawn the way this process's output is seen (see progress_mode). Use as a context manager."""
    mode = progress_mode()
    common = dict(total=total, desc=desc, unit=unit, initial=initial, unit_scale=unit_scale, disable=mode == "off")
    if mode == "widgets":
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**common)
    from tqdm import tqdm

    if mode == "log":
        return tqdm(**common, file=sys.stdout, mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S,
                    ascii=True, ncols=100)
    return tqdm(**common, file=sys.stderr, dynamic_ncols=True)


def track(iterable, desc: str = "", unit: str = "it", total=None):
    """Iterate with one progress bar (closed when the loop ends, or breaks)."""
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    with progress_bar(total=total, desc=desc, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def follow_output_file(process, path, expected_bytes: int, desc: str, poll_s: float = 0.5) -> tuple[str, str]:
    """Wait for a subprocess that writes one file (llama.cpp's GGUF converter), with a bar of the
    file's size against the size expected; returns the process's (stdout, stderr)."""
    path = Path(path)
    with progress_bar(total=expected_bytes or None, desc=desc, unit="B", unit_scale=True) as bar:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=poll_s)  # retrying after a timeout loses no output
                break
            except subprocess.TimeoutExpired:
                size = path.stat().st_size if path.exists() else 0
                bar.update(min(size, expected_bytes or size) - bar.n)  # the expected size is an estimate
        if process.returncode == 0 and expected_bytes:
            bar.update(expected_bytes - bar.n)
    return stdout, stderr


class TrainingProgress:
    """One bar for trainer.train(): optimizer steps, with the latest loss / eval loss / reward as numbers;
    and one for each evaluation (trainer.evaluate(), before, during or after training): its batches.

    The TrainerCallback events that draw the bar; `training_progress()` mixes them into a real
    TrainerCallback. Kept apart so that importing this module imports neither transformers nor
    torch (the batch runner draws its bar without them).
    """

    def __init__(self, desc: str = "train"):
        self.desc = desc
        self.bar = None
        self.eval_bar = None  # one per evaluation (before, during and after training): its batches
        self.postfix = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_local_process_zero:  # under DDP one bar, not one per rank
            # a resumed run starts at its checkpoint's step
            self.bar = progress_bar(total=state.max_steps, desc=self.desc, unit="step", initial=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        for key, label in POSTFIX_KEYS.items():
            if isinstance(logs.get(key), (int, float)):
                self.postfix[label] = round(float(logs[key]), 4)
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_local_process_zero:
            return
        if self.eval_bar is None:
            total = len(eval_dataloader) if hasattr(eval_dataloader, "__len__") else None
            self.eval_bar = progress_bar(total=total, desc="eval loss", unit="batch")
        self.eval_bar.update(1)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@functools.cache
def _callback_class():
    from transformers import TrainerCallback

    return type("TrainingProgressCallback", (TrainingProgress, TrainerCallback), {})


def training_progress(desc: str = "train"):
    """A transformers TrainerCallback drawing one TrainingProgress bar."""
    return _callback_class()(desc)


def show_progress(trainer):
    """Replace transformers' per-step dict printing and its extra bars with one training bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(training_progress())
    return trainer
