"""Low-rank matrices for teaching: truncated SVD and LoRA's low-rank update, NumPy only.

LoRA fine-tunes a weight matrix W (d x k) by learning a low-rank update
dW = B @ A with B (d x r), A (r x k) and r << min(d, k). Two classic tools show
what "low rank" buys and what it costs:

- Truncated SVD gives the *best* rank-k approximation of any matrix
  (Eckart-Young): its Frobenius error is exactly sqrt(sum of the squared
  singular values that were dropped), and it stores k * (m + n + 1) numbers
  instead of m * n.
- ALS matrix factorisation (lab_utils/teaching/als.py) learns R ~ mu + b_user + c_item + P @ Q.T from a
  small fraction of observed entries: the same "two thin factors" shape as
  LoRA's B and A, fitted by alternating ridge regressions, each of which has a
  closed-form solution. `choose_by_validation` picks its rank and regularisation
  on ratings held out from the training set, never on the test set.
- LoRA updates dW = scale * B @ A: parameter counts against full fine-tuning,
  the dense update, and its singular values (at most r of them are non-zero).

Everything here is deterministic given a seed. Ratings are passed as three
parallel arrays (users, items, ratings) with 0-based integer ids.
"""


import numpy as np

# ---------------------------------------------------------------- truncated SVD


def svd(matrix):
    """Thin SVD (U, s, Vt) of a 2-D array, in float64 so small singular values stay exact."""
    return np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)


def truncated_svd(matrix, rank: int):
    """The first `rank` singular triplets: U_k (m x k), s_k (k,), Vt_k (k x n)."""
    u, s, vt = svd(matrix)
    return u[:, :rank], s[:rank], vt[:rank]


def reconstruct(u, s, vt, rank: int | None = None):
    """U_k diag(s_k) Vt_k: the rank-k matrix the first k triplets describe."""
    rank = len(s) if rank is None else rank
    return (u[:, :rank] * s[:rank]) @ vt[:rank]


def low_rank_approx(matrix, rank: int):
    """The best rank-k approximation of `matrix` in Frobenius (and spectral) norm."""
    return reconstruct(*svd(matrix), rank)


def frobenius_error(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def eckart_young_error(singular_values, rank: int) -> float:
    """The smallest Frobenius error any rank-k matrix can reach: sqrt(sum_{i>k} s_i^2)."""
    tail = np.asarray(singular_values, dtype=np.float64)[rank:]
    return float(np.sqrt(np.sum(tail**2)))


def energy(singular_values):
    """Cumulative fraction of sum(s_i^2) kept by ranks 1..n (explained variance for centred data)."""
    squared = np.asarray(singular_values, dtype=np.float64) ** 2
    return np.cumsum(squared) / squared.sum()


def rank_for_energy(singular_values, fraction: float) -> int:
    """Smallest k whose first k singular values keep at least `fraction` of the energy."""
    return int(np.searchsorted(energy(singular_values), fraction - 1e-12) + 1)


def factor_storage(shape, rank: int) -> int:
    """Numbers stored by rank-k factors U_k, s_k, Vt_k of an m x n matrix: k * (m + n + 1)."""
    m, n = shape
    return rank * (m + n + 1)


def compression_ratio(shape, rank: int) -> float:
    """Full storage m * n over factor storage: > 1 means the factors are smaller."""
    m, n = shape
    return m * n / factor_storage(shape, rank)


def channel_svds(image):
    """One thin SVD per colour channel of an (H, W) or (H, W, C) image."""
    image = np.asarray(image, dtype=np.float64)
    channels = image[..., None] if image.ndim == 2 else image
    return [svd(channels[..., c]) for c in range(channels.shape[-1])]


def reconstruct_channels(svds, rank: int, squeeze: bool = True):
    """Rebuild an image from its per-channel SVDs at `rank`, clipped to the [0, 1] pixel range."""
    image = np.stack([reconstruct(u, s, vt, rank) for u, s, vt in svds], axis=-1)
    image = np.clip(image, 0.0, 1.0)
    return image[..., 0] if squeeze and image.shape[-1] == 1 else image


def pca_2d(points):
    """Project rows onto their two main directions (centred SVD), e.g. item factors to a 2-D map."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0)
    u, s, _ = svd(centred)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:  # rank-1 factors: pad so a 2-D scatter still works
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    return coords


# ------------------------------------------------------------------ LoRA updates
#
# LoRA keeps a pretrained weight W (d_out x d_in) frozen and learns
#     dW = scale * B @ A,   B (d_out x r) starts at zero, A (r x d_in) random,
# with scale = alpha / r (or alpha / sqrt(r) for rsLoRA). The layer computes
# x W^T + scale * (x A^T) B^T, so merging W + dW gives the same outputs with
# no extra work at inference.


def lora_scale(alpha: float, rank: int, use_rslora: bool = False) -> float:
    """alpha / r, or alpha / sqrt(r) for rsLoRA (keeps the update's size steady as r grows)."""
    return float(alpha) / (float(rank) ** 0.5 if use_rslora else float(rank))


def lora_parameter_count(d_out: int, d_in: int, rank: int) -> int:
    """Numbers LoRA trains for one d_out x d_in weight: B has d_out * r, A has r * d_in."""
    return rank * (d_out + d_in)


def lora_parameter_counts(shape, ranks) -> list[dict]:
    """Full fine-tuning vs LoRA for one (d_out, d_in) weight at each rank: counts and the fraction trained."""
    d_out, d_in = shape
    full = d_out * d_in
    return [
        {"rank": int(r), "full": full, "lora": lora_parameter_count(d_out, d_in, int(r)),
         "fraction": lora_parameter_count(d_out, d_in, int(r)) / full}
        for r in ranks
    ]


def lora_break_even_rank(shape) -> int:
    """The largest r whose LoRA factors are still smaller than the full matrix: d_out d_in / (d_out + d_in)."""
    d_out, d_in = shape
    return (d_out * d_in - 1) // (d_out + d_in)


def delta_weight(lora_a, lora_b, scale: float):
    """The dense update dW = scale * B @ A (d_out x d_in), in float64."""
    return scale * (np.asarray(lora_b, dtype=np.float64) @ np.asarray(lora_a, dtype=np.float64))


def lora_singular_values(lora_a, lora_b, scale: float):
    """The r singular values of scale * B @ A without forming the d_out x d_in matrix.

    With B = Q_b R_b and A^T = Q_a R_a (thin QR), dW = Q_b (scale R_b R_a^T) Q_a^T and
    both Q's have orthonormal columns, so dW shares the singular values of the
    r x r core. Every other singular value of dW is exactly zero: rank(dW) <= r.
    """
    q_b, r_b = np.linalg.qr(np.asarray(lora_b, dtype=np.float64))
    q_a, r_a = np.linalg.qr(np.asarray(lora_a, dtype=np.float64).T)
    return np.linalg.svd(scale * r_b @ r_a.T, compute_uv=False)


def numerical_rank(singular_values, rtol: float = 1e-8) -> int:
    """How many singular values are above rtol * the largest (0 for a zero matrix)."""
    s = np.asarray(singular_values, dtype=np.float64)
    return int(np.sum(s > rtol * s.max())) if s.size and s.max() > 0 else 0


def effective_rank(singular_values, fraction: float = 0.9) -> int:
    """Smallest k keeping `fraction` of the energy sum(s_i^2); 0 for an all-zero update."""
    s = np.asarray(singular_values, dtype=np.float64)
    return rank_for_energy(s, fraction) if s.size and np.any(s > 0) else 0
