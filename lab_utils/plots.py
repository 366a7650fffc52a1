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


# ---------------------------------------------------------------- text-generation metrics (base vs tuned)

def plot_metric_comparison(base: dict, tuned: dict, metrics=("bleu4", "rouge1", "rouge2", "rougeL"),
                           title: str = "Base vs fine-tuned", path=None):
    """Grouped bars, one pair per metric (0..100 scale, e.g. from lab_utils.metrics.text_metrics)."""
    metrics = [m for m in metrics if m in base and m in tuned]
    if not metrics:
        raise ValueError(f"no metric present in both dicts: base has {sorted(base)}, tuned has {sorted(tuned)}")
    positions = range(len(metrics))
    width = 0.38
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 3.6))
    for offset, label, scores, color in ((-width / 2, "base", base, "#9aa5b1"), (width / 2, "tuned", tuned, "#2f7ed8")):
        values = [float(scores[m]) for m in metrics]
        bars = ax.bar([p + offset for p in positions], values, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(positions), metrics)
    ax.set_ylabel("score (0-100)")
    ax.set_ylim(0, max(100.0, *(float(d[m]) for d in (base, tuned) for m in metrics)) * 1.2)  # room for the legend
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------- vision SFT (images with answers)

def plot_image_grid(images: list, captions: list[str], correct: list[bool] | None = None, columns: int = 4,
                    title: str = "", path=None):
    """Images (PIL or arrays) in a grid, each with its caption below; `correct` colours captions green/red."""
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, (1.3 + 0.22 * lines) * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(images):
            continue
        ax.imshow(images[index])
        color = "black" if correct is None else ("tab:green" if correct[index] else "tab:red")
        ax.text(0.5, -0.06, captions[index], transform=ax.transAxes, ha="center", va="top", fontsize=8,
                family="monospace", color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
