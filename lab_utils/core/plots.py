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
    """Grouped bars, one pair per metric (0..100 scale, e.g. from lab_utils.evaluation.metrics.text_metrics)."""
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


# --- teaching: SVD / ALS ---


def plot_image_grid(images: list, captions: list[str], path=None, columns: int = 4, correct: list[bool] | None = None,
                    title: str = ""):
    """Images (PIL, RGB arrays, or grayscale arrays in [0, 1] drawn in gray) in a grid, each with its
    caption below; `correct` colours the captions green/red (answers right or wrong)."""
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    lines = max((str(caption).count("\n") + 1 for caption in captions), default=1)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, (2.2 + 0.22 * lines) * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(images):
            continue
        image = images[index]
        gray = getattr(image, "ndim", 3) == 2
        ax.imshow(image, cmap="gray" if gray else None, vmin=0 if gray else None, vmax=1 if gray else None)
        color = "black" if correct is None else ("tab:green" if correct[index] else "tab:red")
        ax.text(0.5, -0.04, str(captions[index]), transform=ax.transAxes, ha="center", va="top", fontsize=8,
                family="monospace", color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_singular_values(singular_values, path=None, title: str = "singular value spectrum"):
    """Singular values on a log scale, and the cumulative energy sum(s_i^2) they keep."""
    s = [float(v) for v in singular_values]
    total = sum(v * v for v in s)
    cumulative, running = [], 0.0
    for v in s:
        running += v * v
        cumulative.append(running / total if total > 0 else 0.0)  # a zero matrix keeps no energy at any rank
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


def plot_item_embedding(coords, path=None, colour=None, colour_label: str = "",
                        title: str = "items, PCA of ALS item factors"):
    """A 2-D scatter of item factors (e.g. coloured by item bias: do good films cluster?)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    points = ax.scatter([c[0] for c in coords], [c[1] for c in coords], c=colour, s=8, cmap="coolwarm", alpha=0.8)
    if colour is not None:
        fig.colorbar(points, ax=ax, label=colour_label)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


# --- batch runs (scripts/batch.py) ---


def plot_loss_curves(histories: dict, path=None, title: str = "training loss by run", key: str = "loss",
                     ylabel: str = "train loss", xlabel: str = "step"):
    """One logged value (train loss, GRPO's reward, ...) of several runs on one axis ({run name: records}), by step."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, history in histories.items():
        points = [(r["step"], r[key]) for r in history if r.get(key) is not None and "step" in r]
        if points:
            ax.plot(*zip(*points), marker=".", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_batch_durations(names, seconds, statuses, path=None, title: str = "run time"):
    """Horizontal bars, one per run, red where the run failed: where the batch's time went."""
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.2))
    colours = ["#2f7ed8" if s == "finished" else "#d9534f" for s in statuses]
    bars = ax.barh(list(names), [float(s or 0) for s in seconds], color=colours)
    ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    ax.invert_yaxis()  # first run on top, as in the table
    ax.set(xlabel="seconds", title=title)
    fig.tight_layout()
    return save(fig, path)
# --- data -----------------------------------------------------------------------

def plot_length_histogram(lengths, path=None, title: str = "tokens per conversation", bins: int = 30):
    """How long the training rows are: guides max_seq_length and the batch size."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(list(lengths), bins=bins, color="#2f7ed8")
    ax.set(xlabel="tokens (chat template included)", ylabel="rows", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


# --- teaching: LoRA rank ---


def plot_lora_parameter_counts(ranks, per_module: dict, total, path=None):
    """Trained numbers vs r: per layer kind against its full matrix, and the whole adapted set in percent.

    `per_module` maps a kind ("q_proj") to (full count, [LoRA count at each rank]);
    `total` is (full count, [LoRA count at each rank]) summed over every adapted layer.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (name, (full, lora)) in enumerate(per_module.items()):
        colour = f"C{i % 10}"
        left.plot(ranks, lora, color=colour, label=f"{name}: r (d_out + d_in)")
        left.axhline(full, color=colour, ls="--", lw=0.8)
    left.set_yscale("log")
    left.set(xlabel="LoRA rank r", ylabel="numbers trained per layer (log)",
             title="LoRA (solid) vs full matrix (dashed)")
    left.legend(fontsize=7)
    total_full, total_lora = total
    right.plot(ranks, [100 * n / total_full for n in total_lora])
    right.set(xlabel="LoRA rank r", ylabel="% of the adapted weights", title="all adapted layers together")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_lora_spectra(spectra: dict, rank: int, path=None):
    """The r singular values of every trained dW, one line per module, normalised by its largest, coloured by kind."""
    kinds = sorted({name.rsplit(".", 1)[-1] for name in spectra})
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, s in spectra.items():
        kind = name.rsplit(".", 1)[-1]
        ax.plot(range(1, len(s) + 1), [v / s[0] if s[0] > 0 else 0.0 for v in s],
                color=f"C{kinds.index(kind) % 10}", alpha=0.35, lw=1)
    for i, kind in enumerate(kinds):
        ax.plot([], [], color=f"C{i % 10}", label=kind)
    ax.set(xlabel="index i (at most r are non-zero)", ylabel="s_i / s_1",
           title=f"singular values of trained dW (r={rank})", xlim=(0.8, rank + 0.2), ylim=(0, 1.05))
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_effective_rank(rows: list[dict], rank: int, path=None):
    """Energy-based effective rank of dW per layer, one line per module kind, under the ceiling r."""
    kinds = sorted({r["kind"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, kind in enumerate(kinds):
        points = sorted((r["layer"], r["effective_rank"]) for r in rows if r["kind"] == kind)
        ax.plot(*zip(*points), marker=".", color=f"C{i % 10}", label=kind)
    ax.axhline(rank, color="k", ls="--", label=f"r = {rank} (rank(dW) can't exceed it)")
    ax.set(xlabel="layer", ylabel="effective rank", title="how many directions carry the update", ylim=(0, rank + 1))
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


# --- GRPO: rewards, completion length, KL ---


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


# --- preference tuning (DPO / ORPO) ---


def plot_preference_rewards(history: list[dict], path=None, title: str = "preference rewards"):
    """The trainer's rewards of the chosen and the rejected answers per step (left), and the share
    of training pairs it ranks right with the mean margin (right)."""
    fig, (ax_rewards, ax_accuracy) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, colour in (("rewards/chosen", "tab:green"), ("rewards/rejected", "tab:red")):
        points = _series(history, key)
        if points:
            ax_rewards.plot(*zip(*points), marker=".", color=colour, label=key.split("/")[1])
    ax_rewards.axhline(0, color="grey", lw=0.8)
    ax_rewards.set(xlabel="step", ylabel="reward (training batch)", title=title)
    ax_rewards.legend(fontsize=8)
    accuracy = _series(history, "rewards/accuracies")
    if accuracy:
        ax_accuracy.plot(*zip(*accuracy), marker=".", color="tab:blue", label="accuracy")
    ax_accuracy.set(xlabel="step", ylabel="share of pairs ranked right", ylim=(-0.05, 1.05),
                    title="batch accuracy, margin")
    margins = _series(history, "rewards/margins")
    if margins:
        twin = ax_accuracy.twinx()
        twin.plot(*zip(*margins), color="tab:orange", alpha=0.7, label="margin")
        twin.set(ylabel="mean margin (chosen - rejected)")
        twin.legend(loc="lower right", fontsize=8)
    ax_accuracy.legend(loc="upper left", fontsize=8)
    for ax in (ax_rewards, ax_accuracy):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_preference_margins(before: list[float], after: list[float], path=None, measure: str = "margin",
                            accuracy: tuple = (None, None)):
    """Held-out pairs: the distribution of (chosen - rejected) before and after training; right of 0 = preferred."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    values = list(before) + list(after)
    low, high = min(values + [0.0]), max(values + [0.0])
    bins = [low + (high - low) * i / 30 for i in range(31)] if high > low else 10
    for label, data, colour, share in (("before", before, "tab:grey", accuracy[0]),
                                       ("after", after, "tab:blue", accuracy[1])):
        name = f"{label} (accuracy {share:.2f})" if share is not None else label
        ax.hist(data, bins=bins, alpha=0.6, color=colour, label=name)
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel=f"{measure}: chosen - rejected", ylabel="held-out pairs", title="held-out preference margins")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)
