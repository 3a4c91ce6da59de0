"""Pictures: image grids, labelled galleries, similarity matrices.

Everything returns or draws with matplotlib, so figures appear inline in notebooks and in
the book; nothing here opens a window.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2,
               pad_value: float = 1.0) -> torch.Tensor:
    """Tile ``[N, C, H, W]`` images (values in [0, 1]) into one ``[C, H', W']`` image."""
    if images.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i].detach().float().clamp(0, 1).cpu()
    return grid


def show_images(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8,
                scale: float = 1.6, suptitle: str | None = None):
    """A gallery of images with optional titles under each; returns the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows * 1.15),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                  interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7, wrap=True)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_grid(images: torch.Tensor, nrow: int | None = None, title: str | None = None,
              size: float = 6.0):
    """One tiled image (see :func:`image_grid`) drawn on a single axis; returns the figure."""
    import matplotlib.pyplot as plt

    grid = image_grid(images, nrow=nrow)
    fig, ax = plt.subplots(figsize=(size, size * grid.shape[1] / grid.shape[2]))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return fig


def show_matrix(matrix: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str],
                title: str | None = None, cmap: str = "viridis", fmt: str = "{:.2f}",
                annotate: bool = True, vmin: float | None = None, vmax: float | None = None):
    """A labelled heat map, e.g. a similarity matrix or an accuracy table."""
    import matplotlib.pyplot as plt

    m = matrix.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(0.6 * len(col_labels) + 2.5, 0.45 * len(row_labels) + 1.5))
    im = ax.imshow(m.numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    if annotate:
        lo = m.min().item() if vmin is None else vmin
        hi = m.max().item() if vmax is None else vmax
        middle = (lo + hi) / 2  # dark text on the bright half of the map
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, fmt.format(m[i, j].item()), ha="center", va="center",
                        color="k" if m[i, j] > middle else "w", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def png_bytes(images: torch.Tensor, zoom: int = 4) -> bytes:
    """``[N, 3, H, W]`` images in [0, 1] as one PNG row, enlarged ``zoom``× with nearest
    neighbours (crisp pixels): what an ``ipywidgets.Image`` slider shows."""
    import io

    from PIL import Image

    grid = image_grid(images, nrow=len(images))  # [3, H', W']
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = Image.fromarray(array).resize((array.shape[1] * zoom, array.shape[0] * zoom), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def show_rows(rows: Sequence, row_labels: Sequence[str], col_labels: Sequence[str], title: str | None = None,
              scale: float = 1.5, wrap: int = 20):
    """One figure row per entry of ``rows`` (each ``[N, 3, H, W]`` in [0, 1], or a list of
    ``[3, H, W]``), columns titled by ``col_labels`` (wrapped at ``wrap`` characters unless
    they hold their own line breaks), rows by ``row_labels``. Returns the figure."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(col_labels), squeeze=False,
                             figsize=(scale * len(col_labels) + 0.6, scale * len(rows) + 0.5))
    for r, images in enumerate(rows):
        for c, label in enumerate(col_labels):
            ax = axes[r, c]
            ax.imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label if "\n" in label else "\n".join(textwrap.wrap(label, wrap)), fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
