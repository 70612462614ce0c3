"""Matplotlib helpers (Agg backend: no display needed). Figures are saved small: PNG, modest dpi."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plt", "save_figure", "annotated_heatmap", "grid_shape"]

DPI = 90


def save_figure(fig, path: str | Path, palette: bool = False) -> Path:
    """Save and close ``fig``; the folder is created.

    ``palette=True`` stores the PNG with a 256-colour adaptive palette: figures full of photographs
    shrink about three-fold and still read well.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not palette:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    else:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=DPI, bbox_inches="tight", format="png")
        buffer.seek(0)
        with Image.open(buffer) as image:
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    plt.close(fig)
    return path


def grid_shape(n: int, max_columns: int = 5) -> tuple[int, int]:
    columns = min(n, max_columns)
    return -(-n // columns), columns


def annotated_heatmap(ax, values: np.ndarray, row_labels, column_labels, fmt: str = "{:.2f}",
                      cmap: str = "viridis", vmin=None, vmax=None, fontsize: int = 8):
    """A heatmap with the value printed in every cell (text colour flips on dark cells)."""
    values = np.asarray(values, dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(column_labels)), [str(c) for c in column_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    low, high = np.nanmin(values), np.nanmax(values)
    middle = (low + high) / 2 if vmin is None or vmax is None else (vmin + vmax) / 2
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isnan(values[i, j]):
                continue
            color = "white" if values[i, j] < middle else "black"
            ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", color=color, fontsize=fontsize)
    return image
