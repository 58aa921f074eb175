"""Plot the training curves of a Caffe or crema training log (a simpler Caffe
tools/extra/plot_training_log.py): one panel with every train net output and one with every test
net output, against iterations or seconds. Needs matplotlib (an optional dependency); the output
format follows the file extension (png, svg, pdf, ...)."""
import os

from ..errors import CremaError
from .parse_log import BASE_COLUMNS, parse_log


class MissingDependencyError(CremaError):
    """An optional Python package the command needs is not installed."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("plotting needs matplotlib, which is not installed: "
                                     "pip install matplotlib") from None
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    return plt


def plot_log(log_path, out_path, x="iters"):
    """Draw the curves of `log_path` into `out_path`; x is "iters" or "seconds"."""
    if x not in ("iters", "seconds"):
        raise CremaError(f"x must be 'iters' or 'seconds', got {x!r}")
    train, test, train_cols, test_cols = parse_log(log_path)
    if not train and not test:
        raise CremaError(f"{log_path}: the log has no train or test net outputs to plot")
    plt = _pyplot()
    key = "NumIters" if x == "iters" else "Seconds"
    panels = [(title, rows, [c for c in cols if c not in BASE_COLUMNS])
              for title, rows, cols in (("train", train, train_cols), ("test", test, test_cols))
              if rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
    for ax, (title, rows, names) in zip(axes[:, 0], panels):
        for name in names:
            pts = [(r[key], r[name]) for r in rows if name in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
        ax.set_title(f"{os.path.basename(log_path)}: {title} net outputs")
        ax.set_xlabel("iterations" if x == "iters" else "seconds")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    fig.tight_layout()
    try:
        fig.savefig(out_path)
    except (OSError, ValueError) as exc:
        raise CremaError(f"{out_path}: cannot write the plot: {exc}") from None
    finally:
        plt.close(fig)
    return out_path
