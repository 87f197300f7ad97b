"""Pictures (the ``cnnir[plot]`` extra, matplotlib): a network's cost per layer
(``cnnir analyze --plot``) and a training run's curves (``cnnir train --plot``).

``plot_costs`` draws, in execution order, each layer's MACs and parameters as bars and the
activation memory live while it runs with its peak marked; the x axis names the modules
(two levels deep) where they start, as many as fit, so ResNet-152's 515 ops read as well as
a 10-layer network. Files ending in .svg are vector images, anything else goes through Agg (PNG).
"""

from __future__ import annotations

import math
from typing import Any

from cnnir.errors import optional_module
from cnnir.passes.cost import CostReport

PLOT_HINT = 'pip install "cnnir[plot]"'


def require_matplotlib() -> None:
    optional_module("matplotlib.figure", "--plot", PLOT_HINT)


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _sections(names: list[str]) -> list[tuple[int, str]]:
    """``(first layer index, module)`` where a new module of the first two levels starts
    (``layer3.4``, ``features.7``), skipping those that would crowd the previous label
    (closer than 1/40 of the axis)."""
    gap = len(names) / 40
    starts: list[tuple[int, str]] = []
    module = None
    for i, name in enumerate(names):
        if ".".join(name.split(".")[:2]) != module:
            module = ".".join(name.split(".")[:2])
            if not starts or i - starts[-1][0] >= gap:
                starts.append((i, module))
    return starts


def plot_costs(report: CostReport, path: str) -> None:
    """MACs, params and live activation memory per layer of ``report`` (a training step's
    backward after a dotted line), into ``path``."""
    layers, live = report.layers, report.live_bytes
    x = list(range(len(layers)))
    figure = _figure((max(10.0, min(24.0, len(layers) / 8)), 8))
    macs_axes, params_axes, memory_axes = figure.subplots(3, 1, sharex=True)
    macs_axes.bar(x, [layer.macs / 1e6 for layer in layers], width=1.0, color="tab:blue")
    macs_axes.set_ylabel("MACs (M)")
    params_axes.bar(x, [layer.params / 1e3 for layer in layers], width=1.0, color="tab:green")
    params_axes.set_ylabel("params (K)")
    memory_axes.fill_between(x, [b / 2**20 for b in live], step="mid", color="tab:orange",
                             alpha=0.6)
    memory_axes.set_ylabel("live activations (MiB)")
    if live:
        peak = max(range(len(live)), key=live.__getitem__)
        memory_axes.axvline(peak, color="tab:red", linestyle="--")
        memory_axes.annotate(f"peak {live[peak] / 2**20:.1f} MiB\nat {layers[peak].name}",
                             (peak, live[peak] / 2**20), xytext=(8, -4),
                             textcoords="offset points", va="top", color="tab:red")
    backward = next((i for i, layer in enumerate(layers) if layer.phase == "backward"), None)
    if backward is not None:  # a training step's graph (analyze --training)
        for axes in (macs_axes, params_axes, memory_axes):
            axes.axvline(backward - 0.5, color="gray", linestyle=":")
        macs_axes.annotate("backward", (backward, 1.0), xycoords=("data", "axes fraction"),
                           xytext=(4, -12), textcoords="offset points", color="gray")
    sections = _sections([layer.name for layer in layers])
    memory_axes.set_xticks([i for i, _ in sections], [name for _, name in sections],
                           rotation=60, ha="right", fontsize=8)
    memory_axes.set_xlabel("layers in execution order")
    for axes in (macs_axes, params_axes, memory_axes):
        axes.grid(axis="y", alpha=0.3)
        axes.set_xlim(-0.5, len(layers) - 0.5)
    totals = report.totals
    figure.suptitle(f"{report.model}: {len(layers)} layers, {totals.macs / 1e9:.2f} G MACs, "
                    f"{totals.params / 1e6:.2f} M params, peak activations "
                    f"{totals.peak_activation_bytes / 2**20:.1f} MiB"
                    + (" (per sample)" if report.per_sample else ""))
    figure.savefig(path)


def plot_history(history: list[dict[str, Any]], path: str) -> None:
    """Train and validation loss (left) and accuracy (right) per epoch, as an image."""
    figure = _figure((10, 4))
    epochs = [r["epoch"] for r in history]
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "acc")):
        for split in ("train", "val"):
            values = [r[f"{split}_{metric}"] for r in history]
            if any(v is not None for v in values):
                axes.plot(epochs, [math.nan if v is None else v for v in values], marker="o",
                          label=split)
        axes.set_xlabel("epoch")
        axes.set_ylabel("accuracy" if metric == "acc" else "loss")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.savefig(path)


__all__ = ["PLOT_HINT", "plot_costs", "plot_history", "require_matplotlib"]
