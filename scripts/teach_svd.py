"""Teaching: compress a photograph with the truncated SVD and check Eckart-Young.

    python -m scripts.teach_svd --config configs/teach_svd.yaml --grayscale false

An image is a matrix (one per colour channel). Its SVD A = U diag(s) V^T
splits it into rank-1 layers ordered by importance; keeping the first k gives
the best rank-k approximation there is (Eckart-Young), whose Frobenius error
is exactly sqrt(sum of the dropped s_i^2), stored in k(m+n+1) numbers instead
of m*n. LoRA bets that a fine-tuning update is such a matrix: most of its
energy in a few directions.

Writes to $LAB_OUTPUT_DIR/teach_svd/<run_name>/: reconstructions.png,
spectrum.png, error_vs_rank.png, storage_vs_rank.png, metrics.json, params.json.
"""

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from lab_utils.teaching import lowrank
from lab_utils.core import plots
from lab_utils.core.artifacts import write_json
from lab_utils.core.config import run_cli, save_params
from lab_utils.core.paths import default_run_name, find_data_file, mark_complete, run_dir


@dataclass(kw_only=True)
class Params:
    image: str = "grace_hopper.jpg"  # a matplotlib sample image, a file under LAB_DATA_DIR, or "synthetic"
    grayscale: bool = True  # one matrix instead of three: the spectrum and the bound are easier to read
    max_side: int = 512  # downscale larger images first (the SVD costs O(m n min(m, n)))
    grid_ranks: list = field(default_factory=lambda: [1, 5, 10, 20, 50, 100])  # ranks drawn side by side
    seed: int = 0  # only for the synthetic image
    run_name: str = ""  # empty: teach_svd-<timestamp>
    overwrite: bool = False  # replace a finished run with this name


def synthetic_image(size: int = 256, seed: int = 0):
    """A smooth gradient, a few discs and a little noise: low rank, with a noisy tail."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.5 * x + 0.3 * y
    for cx, cy, r in rng.uniform([0.2, 0.2, 0.05], [0.8, 0.8, 0.2], (4, 3)):
        image = image + 0.4 * (((x - cx) ** 2 + (y - cy) ** 2) < r**2)
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)


def image_path(name: str):
    """A matplotlib sample image by name (shipped with matplotlib, offline), else a data file."""
    import matplotlib.cbook

    sample = Path(matplotlib.cbook.get_sample_data(name, asfileobj=False))
    return sample if sample.is_file() else find_data_file(name)


def load_image(p: Params):
    """The image as floats in [0, 1]: (H, W) when grayscale, else (H, W, 3)."""
    if p.image == "synthetic":
        gray = synthetic_image(min(p.max_side, 256), p.seed)
        return gray if p.grayscale else np.stack([gray, gray[::-1], gray.T], axis=-1)
    picture = Image.open(image_path(p.image)).convert("L" if p.grayscale else "RGB")
    picture.thumbnail((p.max_side, p.max_side))  # keeps the aspect ratio, never enlarges
    return np.asarray(picture, dtype=np.float64) / 255.0


def error_by_rank(image, svds):
    """Measured Frobenius error and the Eckart-Young value at every rank 0..full.

    The rank-k reconstruction is built one rank-1 layer s_k u_k v_k^T at a time,
    so every rank costs one outer product, not a fresh matrix product.
    """
    channels = image[..., None] if image.ndim == 2 else image
    full = len(svds[0][1])
    squared_errors = np.zeros(full + 1)
    for c, (u, s, vt) in enumerate(svds):
        residual = channels[..., c].copy()
        squared_errors[0] += np.sum(residual**2)
        for k in range(full):
            residual -= s[k] * np.outer(u[:, k], vt[k])
            squared_errors[k + 1] += np.sum(residual**2)
    bounds = [np.sqrt(sum(lowrank.eckart_young_error(s, k) ** 2 for _, s, _ in svds)) for k in range(full + 1)]
    return np.arange(full + 1), np.sqrt(squared_errors), np.array(bounds)


def storage_by_rank(image, ranks):
    """Numbers stored by the rank-k factors of every channel, and by the image itself."""
    n_channels = 1 if image.ndim == 2 else image.shape[-1]
    shape = image.shape[:2]
    return [n_channels * lowrank.factor_storage(shape, int(k)) for k in ranks], n_channels * shape[0] * shape[1]


def summarise(p: Params, image, svds, ranks, errors, bounds) -> dict:
    all_s = np.sort(np.concatenate([s for _, s, _ in svds]))[::-1]
    storage, full_numbers = storage_by_rank(image, ranks)
    total = np.linalg.norm(image)
    grid = [
        {"rank": k, "error": float(errors[k]), "eckart_young": float(bounds[k]),
         "relative_error": float(errors[k] / total), "compression_ratio": full_numbers / storage[k] if k else None}
        for k in p.grid_ranks if k < len(errors)
    ]
    return {
        "image": p.image, "shape": list(image.shape), "full_rank": int(len(svds[0][1])),
        "rank_for_90pct_energy": lowrank.rank_for_energy(all_s, 0.90),
        "rank_for_99pct_energy": lowrank.rank_for_energy(all_s, 0.99),
        "max_gap_error_vs_eckart_young": float(np.max(np.abs(errors - bounds))),
        "break_even_rank": int(full_numbers // storage[1]),  # beyond it the factors are bigger than the image
        "grid": grid,
    }


def start_run(p: Params) -> Path:
    run = run_dir("teach_svd", p.run_name or default_run_name("teach_svd"), overwrite=p.overwrite)
    save_params(p, run / "params.json")
    return run


def plot_spectrum(run: Path, svds):
    return plots.plot_singular_values(svds[0][1], run / "spectrum.png")


def plot_reconstructions(p: Params, run: Path, image, svds):
    grid_ranks = [k for k in p.grid_ranks if k <= len(svds[0][1])]
    images = [image] + [lowrank.reconstruct_channels(svds, k) for k in grid_ranks]
    titles = ["original"] + [f"rank {k} ({lowrank.compression_ratio(image.shape[:2], k):.1f}x smaller)"
                             for k in grid_ranks]
    return plots.plot_image_grid(images, titles, run / "reconstructions.png")


def plot_error(run: Path, ranks, errors, bounds):
    return plots.plot_error_vs_rank(ranks, errors, bounds, run / "error_vs_rank.png")


def plot_storage(run: Path, image, ranks):
    storage, full_numbers = storage_by_rank(image, ranks)
    return plots.plot_storage_vs_rank(ranks, storage, full_numbers, run / "storage_vs_rank.png")


def save_results(run: Path, metrics: dict) -> None:
    """metrics.json, then the completion marker (figures are saved where drawn)."""
    write_json(metrics, run / "metrics.json")
    plt.close("all")
    mark_complete(run, {"full_rank": metrics["full_rank"]})
    print(f"teach_svd: {metrics['shape']} image, full rank {metrics['full_rank']}, "
          f"99% energy at rank {metrics['rank_for_99pct_energy']}, "
          f"max |error - Eckart-Young| = {metrics['max_gap_error_vs_eckart_young']:.2e}; wrote {run}")


def run(p: Params) -> dict:
    run = start_run(p)
    image = load_image(p)
    svds = lowrank.channel_svds(image)
    ranks, errors, bounds = error_by_rank(image, svds)
    plot_reconstructions(p, run, image, svds)
    plot_spectrum(run, svds)
    plot_error(run, ranks, errors, bounds)
    plot_storage(run, image, ranks)
    metrics = summarise(p, image, svds, ranks, errors, bounds)
    save_results(run, metrics)
    return {"run_dir": str(run), **metrics}


def main(argv=None):
    return run_cli(run, Params, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
