"""Every figure the lab draws, in one place, so notebooks and scripts show the same plots.

Each function takes plain data (lists, dicts, arrays), returns the matplotlib
Figure, and saves it as PNG when given a path. Without a screen matplotlib
falls back to Agg by itself; Jupyter and papermill kernels draw inline.
"""

from pathlib import Path

import matplotlib.pyplot as plt


def save(fig, path=None, dpi: int = 110):
    """Save `fig` as PNG if a path is given; always return the figure (notebooks display it)."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


# --- training curves -------------------------------------------------------------

def plot_training(history: list[dict], path=None, title: str = "training"):
    """Loss (train and, where logged, eval) and learning rate against the optimizer step."""
    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
    lrs = [(r["step"], r["learning_rate"]) for r in history if "learning_rate" in r]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        ax_loss.plot(*zip(*train), marker=".", label="train loss")
    if evals:
        ax_loss.plot(*zip(*evals), marker="o", label="eval loss")
    ax_loss.set(xlabel="step", ylabel="loss (assistant tokens)", title=title)
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if lrs:
        ax_lr.plot(*zip(*lrs), color="tab:orange")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)
