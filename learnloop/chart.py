"""The demo's chart: learning curves with the drift moment and the drift alerts marked.

Top: each model's recent log loss and the oracle's (the best achievable) against the
examples learned. Bottom: each model's excess over the oracle at the same point — the
oracle moves with whatever the recent examples happen to be (hot users, hot items), so
the excess is the steadier picture of what a model has yet to learn. Matplotlib (the
``charts`` extra) draws on a bare :class:`~matplotlib.figure.Figure`, never through
pyplot, so no GUI backend or global state is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

Curve = list[tuple[int, float]]


@dataclass(frozen=True)
class Marker:
    """A drift alert on the examples axis: whose (a model, else the labels), and whether
    its signal rose (a loss or positive rate going up) or fell (a model warming up)."""

    examples: int
    model: str
    rising: bool


def learning_curves(path: Path, curves: dict[str, Curve], oracle: Curve, *,
                    drift_at: int | None, alerts: list[Marker], window: int,
                    baseline: str) -> Path:
    """Save the learning curves of ``curves`` (model → (examples, recent log loss)) and
    ``oracle`` to ``path`` as a PNG; return ``path``."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    ox, oy = (np.array(v) for v in zip(*oracle, strict=True)) if oracle else ((), ())
    colors, values, excess = {}, [np.array(oy)], [np.zeros(1)]
    for name, points in curves.items():
        if not points:
            continue
        x, y = (np.array(v) for v in zip(*points, strict=True))
        label = name + (" (baseline)" if name == baseline else "")
        style = {"linestyle": "--"} if name == baseline else {}
        line, = top.plot(x, y, label=label, linewidth=1.8, **style)
        colors[name] = line.get_color()
        values.append(y)
        if len(ox):
            excess.append(y - np.interp(x, ox, oy))
            bottom.plot(x, excess[-1], color=line.get_color(), linewidth=1.8, **style)
    if len(ox):
        top.plot(ox, oy, label="oracle (true probabilities)", color="black", linewidth=1.0,
                 linestyle=":")
    bottom.axhline(0.0, color="black", linewidth=1.0, linestyle=":")
    for ax in (top, bottom):
        if drift_at is not None:
            ax.axvline(drift_at, color="red", linewidth=2.0,
                       label="preferences shift (injected)" if ax is top else None)
        for marker in alerts:
            ax.axvline(marker.examples, color=colors.get(marker.model, "grey"), linewidth=1.0,
                       linestyle="-" if marker.rising else ":")
        ax.grid(alpha=0.3)
    for marker in alerts:  # a triangle on top: up for a rising signal, down for a falling one
        top.plot(marker.examples, 1.0, "^" if marker.rising else "v", markersize=7,
                 color=colors.get(marker.model, "grey"), transform=top.get_xaxis_transform(),
                 clip_on=False)
    top.plot([], [], "^", color="grey", label="drift alert: loss (model colour) or positive"
             " rate (grey) rising; ▽ falling")
    _zoom(top, np.concatenate(values), floor=0.0)
    _zoom(bottom, np.concatenate(excess))
    top.set_title("learnloop demo: progressive validation (predict, then learn)")
    top.set_ylabel(f"log loss, last {window:,} examples")
    top.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel("excess over the oracle")
    bottom.set_xlabel("labeled examples learned")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _zoom(ax, values, floor: float | None = None) -> None:
    """Fit the y axis to the bulk of ``values`` (0 included), from ``floor`` if given:
    the first examples, where fresh models guess wildly, would flatten everything else."""
    import numpy as np

    if values.size:
        low, high = min(np.percentile(values, 1), 0.0), max(np.percentile(values, 97), 0.0)
        pad = 0.15 * (high - low or 1.0)
        ax.set_ylim(low - pad if floor is None else floor, high + 3 * pad)
