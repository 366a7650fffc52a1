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
