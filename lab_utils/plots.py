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


# --- teaching: SVD / ALS ---


def plot_image_grid(images, titles, path=None, columns: int = 4):
    """Reconstructions side by side (grayscale arrays are drawn in gray)."""
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def plot_singular_values(singular_values, path=None, title: str = "singular value spectrum"):
    """Singular values on a log scale, and the cumulative energy sum(s_i^2) they keep."""
    s = [float(v) for v in singular_values]
    total = sum(v * v for v in s)
    cumulative, running = [], 0.0
    for v in s:
        running += v * v
        cumulative.append(running / total)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.semilogy(range(1, len(s) + 1), s)
    left.set(xlabel="index i", ylabel="singular value s_i (log)", title=title)
    right.plot(range(1, len(s) + 1), cumulative)
    right.set(xlabel="rank k", ylabel="energy kept", title="cumulative energy", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_error_vs_rank(ranks, errors, bounds, path=None):
    """Measured Frobenius error of the rank-k SVD vs the Eckart-Young value sqrt(sum of dropped s_i^2)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(ranks, bounds, "-", lw=3, alpha=0.4, label="Eckart-Young: sqrt(sum_{i>k} s_i^2)")
    ax.plot(ranks, errors, "o", ms=4, label="measured ||A - A_k||_F")
    ax.set(xlabel="rank k", ylabel="Frobenius error", title="reconstruction error vs rank")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def plot_storage_vs_rank(ranks, factor_numbers, full_numbers: int, path=None):
    """Numbers stored by rank-k factors against the full matrix; where they cross, factors stop paying."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(ranks, factor_numbers, label="rank-k factors: k (m + n + 1)")
    ax.axhline(full_numbers, color="k", ls="--", label="full matrix: m n")
    ax.set(xlabel="rank k", ylabel="numbers stored", title="storage vs rank")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def plot_rmse_history(history, path=None, noise_level=None, baselines=None):
    """Train and validation RMSE per ALS iteration, with optional baseline and noise-floor lines."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(history["iteration"], history["train_rmse"], "o-", ms=3, label="train")
    if any(v is not None for v in history.get("valid_rmse", [])):
        ax.plot(history["iteration"], history["valid_rmse"], "o-", ms=3, label="validation")
    for name, value in (baselines or {}).items():
        ax.axhline(value, ls=":", color="gray")
        ax.annotate(name, (history["iteration"][-1], value), fontsize=8, ha="right", va="bottom")
    if noise_level is not None:
        ax.axhline(noise_level, color="k", ls="--", label=f"noise level {noise_level:g}")
    ax.set(xlabel="ALS iteration", ylabel="RMSE", title="RMSE per iteration")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def plot_rmse_sweep(values, train_rmse, valid_rmse, xlabel: str, path=None, log_x: bool = False, noise_level=None):
    """Final train/validation RMSE across one hyper-parameter (rank or regularisation)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(values, train_rmse, "o-", label="train")
    ax.plot(values, valid_rmse, "o-", label="validation")
    if noise_level is not None:
        ax.axhline(noise_level, color="k", ls="--", label=f"noise level {noise_level:g}")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="RMSE", title=f"RMSE vs {xlabel}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def plot_item_embedding(coords, path=None, colour=None, colour_label: str = "", title: str = "items, PCA of ALS item factors"):
    """A 2-D scatter of item factors (e.g. coloured by item bias: do good films cluster?)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    points = ax.scatter([c[0] for c in coords], [c[1] for c in coords], c=colour, s=8, cmap="coolwarm", alpha=0.8)
    if colour is not None:
        fig.colorbar(points, ax=ax, label=colour_label)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


# --- GRPO: rewards, completion length, KL -----------------------------------------
# `history` is the list of records TRL logged (lab_utils.training.LossHistory):
# rewards/<name>/mean per reward function, reward (the weighted sum) and reward_std,
# completions/mean_length, completions/clipped_ratio, kl (only when beta > 0).

def _series(history: list[dict], key: str) -> list[tuple]:
    return [(r["step"], r[key]) for r in history if r.get(key) is not None]


def plot_reward_curves(history: list[dict], path=None, title: str = "GRPO rewards"):
    """Each reward function's mean per step (left) and the weighted total with its spread (right)."""
    names = sorted({k for r in history for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    fig, (ax_each, ax_total) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key in names:
        points = _series(history, key)
        if points:
            ax_each.plot(*zip(*points), marker=".", label=key.split("/")[1])
    ax_each.set(xlabel="step", ylabel="mean reward (unweighted)", title=title)
    if names:
        ax_each.legend(fontsize=8)
    total = _series(history, "reward")
    if total:
        steps, values = zip(*total)
        spread = dict(_series(history, "reward_std"))
        ax_total.plot(steps, values, color="tab:green", marker=".", label="weighted reward")
        if spread:
            low = [v - spread.get(s, 0.0) for s, v in total]
            high = [v + spread.get(s, 0.0) for s, v in total]
            ax_total.fill_between(steps, low, high, color="tab:green", alpha=0.15, label="± std within the batch")
        ax_total.legend(fontsize=8)
    ax_total.set(xlabel="step", ylabel="reward", title="weighted sum")
    for ax in (ax_each, ax_total):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_grpo_dynamics(history: list[dict], path=None):
    """Completion length (and the share cut off at max_completion_length), and KL to the base model."""
    fig, (ax_len, ax_kl) = plt.subplots(1, 2, figsize=(11, 3.6))
    length = _series(history, "completions/mean_length")
    if length:
        ax_len.plot(*zip(*length), marker=".", label="mean length")
    clipped = _series(history, "completions/clipped_ratio")
    if clipped:
        share = ax_len.twinx()
        share.plot(*zip(*clipped), color="tab:red", alpha=0.6, label="share truncated")
        share.set(ylabel="share truncated", ylim=(-0.05, 1.05))
        share.legend(loc="lower right", fontsize=8)
    ax_len.set(xlabel="step", ylabel="completion tokens", title="completion length")
    ax_len.legend(loc="upper left", fontsize=8)
    kl = _series(history, "kl")
    if kl:
        ax_kl.plot(*zip(*kl), color="tab:purple", marker=".")
        ax_kl.set(title="KL to the base model")
    else:
        ax_kl.set(title="KL not logged (beta = 0)")
    ax_kl.set(xlabel="step", ylabel="KL (per token)")
    for ax in (ax_len, ax_kl):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)
