"""matplotlib for the measurement scripts' figures: the Agg backend (no display), one way to finish a
line plot. matplotlib is the optional extra `plots`, imported only when a figure is drawn."""

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def finish(fig, ax, path: str | Path, xlabel: str, ylabel: str, log2_x: bool = True) -> None:
    """Labels, grid and legend on `ax` (x on a log2 scale), then save `fig` to `path` and close it."""
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
