"""The replay report's PNG charts: learning curves and calibration, byte-reproducible.

matplotlib (the ``charts`` extra) renders a bare Figure with Agg; the PNG carries no ``Software``
version and no time, so the same data gives the same bytes (with the same matplotlib
and fonts: DejaVu Sans ships with matplotlib).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: Equal-count bins of a model's predictions in the calibration chart.
CALIBRATION_BINS = 10
_RC = {"svg.hashsalt": "learnloop", "font.family": "DejaVu Sans", "font.size": 9}


def available() -> bool:
    """Whether matplotlib is installed (``pip install 'learnloop[charts]'``)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def _drawing(path: Path, width: float, height: float) -> Iterator:
    """The axes of a bare Figure (no pyplot: no GUI backend, no global state), drawn in the
    report's style and saved to ``path`` without the Software tag."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):
        fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
        ax = fig.subplots()
        yield ax
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(path, format="png", metadata={"Software": None})


def _style(name: str, baseline: str) -> dict:
    if name == baseline:
        return {"color": "black", "linestyle": "--", "label": f"{name} (baseline)"}
    return {"label": name}


def learning_curves(path: Path, curves: dict[str, list[tuple[int, float]]], baseline: str,
                    window: int, drift_at: list[int]) -> None:
    """Recent log loss against examples learned, every model and the baseline; dotted
    lines where a model's loss drift was detected."""
    with _drawing(path, 8, 4.5) as ax:
        for name, points in curves.items():
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, linewidth=1.4, **_style(name, baseline))
        for n, at in enumerate(sorted(set(drift_at))):
            ax.axvline(at, color="tab:red", linestyle=":", linewidth=1,
                       label="loss drift detected" if n == 0 else None)
        values = [y for points in curves.values() for _, y in points]
        if values:  # the first, noisy examples must not flatten the rest of the curve
            ax.set_ylim(0, min(max(values), 2 * float(np.quantile(values, 0.95))) * 1.05)
        ax.set_xlabel("examples learned (in event-time order)")
        ax.set_ylabel(f"log loss over the last {window:,} examples")
        ax.set_title("Learning curves (progressive validation, lower is better)")


def calibration_points(predictions, labels,
                       bins: int = CALIBRATION_BINS) -> list[tuple[float, float]]:
    """(mean prediction, observed positive rate) per equal-count bin of the predictions.

    >>> calibration_points([0.9, 0.1, 0.2, 0.8], [1, 0, 1, 1], bins=2)
    [(0.15, 0.5), (0.85, 1.0)]
    """
    p = np.asarray(predictions, dtype=float)
    if not len(p):
        return []
    order = np.argsort(p, kind="stable")
    p, y = p[order], np.asarray(list(labels), dtype=float)[order]
    return [(round(float(p[b].mean()), 12), round(float(y[b].mean()), 12))
            for b in np.array_split(np.arange(len(p)), min(bins, len(p))) if len(b)]


def calibration(path: Path, points: dict[str, list[tuple[float, float]]],
                baseline: str) -> None:
    """Observed positive rate against mean prediction per bin (diagonal = calibrated)."""
    with _drawing(path, 5.5, 5) as ax:
        top = max((max(x, y) for pts in points.values() for x, y in pts), default=1.0)
        ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="perfectly calibrated")
        for name, pts in points.items():
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2,
                        **_style(name, baseline))
        ax.set_xlabel("mean predicted probability (bin)")
        ax.set_ylabel("observed positive rate (bin)")
        ax.set_title(f"Calibration ({CALIBRATION_BINS} equal-count bins)")
