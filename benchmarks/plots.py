"""PNG plots of benchmark results (matplotlib, the ``plot`` extra). Without matplotlib the
tables are still written and each plot function returns ``None`` instead of a path."""
from __future__ import annotations

import math
import os


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def heatmap(values: list[list[float]], rows: list[str], cols: list[str], path: str, title: str,
            label: str = "score") -> str | None:
    """``values[i][j]`` for row i, column j (NaN = missing, drawn blank)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.2 + 0.6 * len(rows)))
    image = ax.imshow(values, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 * max(
                    (x for r in values for x in r if not math.isnan(x)), default=1.0) else "black", fontsize=9)
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves(series: dict[str, tuple[list[int], list[float], list[float]]], path: str, title: str,
           xlabel: str = "intermediate steps", ylabel: str = "score") -> str | None:
    """``series[name] = (steps, mean, std)``: one line per name with a std band."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (xs, mean, std) in series.items():
        ax.plot(xs, mean, marker="o", markersize=3, label=name)
        if any(s > 0 for s in std):
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
