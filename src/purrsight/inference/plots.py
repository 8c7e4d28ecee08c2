"""Evaluation figures (matplotlib, Agg: no display needed): confusion matrices and
reliability diagrams, one panel per scoring system, labelled for reading on a screen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TITLES = {
    "label_scoring": "Label scoring (no generation)",
    "generation": "Free generation (parsed text)",
    "report": "Report (generation, emotion rescored)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(systems: dict[str, dict[str, Any]], path: Path) -> Path:
    """One row-normalised confusion matrix per system; cells show counts and row share."""
    plt = _pyplot()
    n = max(1, len(systems))
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 5.8), squeeze=False)
    for ax, (system, m) in zip(axes[0], systems.items(), strict=False):
        counts = np.asarray(m["confusion_matrix"], dtype=float)
        rows, cols = m["confusion_labels"], m["confusion_columns"]
        if counts[:, -1].sum() == 0:  # no unreadable answers: drop the empty "none" column
            counts, cols = counts[:, :-1], cols[:-1]
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for r in range(counts.shape[0]):
            for c in range(counts.shape[1]):
                if counts[r, c]:
                    color = "white" if share[r, c] > 0.55 else "black"
                    ax.text(
                        c,
                        r,
                        f"{int(counts[r, c])}",
                        ha="center",
                        va="center",
                        fontsize=10,
                        color=color,
                    )
        ax.set_xticks(
            range(len(cols)),
            [c.replace("_", " ") for c in cols],
            rotation=40,
            ha="right",
            fontsize=10,
        )
        ax.set_yticks(range(len(rows)), [r.replace("_", " ") for r in rows], fontsize=10)
        ax.set_xlabel("predicted", fontsize=11)
        ax.set_ylabel("true", fontsize=11)
        ax.set_title(
            f"{TITLES.get(system, system)}\nn={m['n']}, accuracy {m['accuracy']:.2f}, "
            f"macro-F1 {m['macro_f1']:.2f}",
            fontsize=11,
        )
    fig.suptitle(
        "Confusion matrices (colour = share of the true class, number = count)", fontsize=12
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(systems: dict[str, dict[str, Any]], path: Path) -> Path:
    """Accuracy per confidence bin against the diagonal, with the bin counts below."""
    plt = _pyplot()
    n = max(1, len(systems))
    fig, axes = plt.subplots(
        2,
        n,
        figsize=(5.2 * n, 6.4),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
        sharex=True,
    )
    for col, (system, m) in enumerate(systems.items()):
        bins = m["reliability"]
        centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = bins[0]["upper"] - bins[0]["lower"]
        acc = [b["accuracy"] if b["count"] else 0.0 for b in bins]
        top, bottom = axes[0][col], axes[1][col]
        top.bar(
            centers,
            acc,
            width=width * 0.9,
            color="#4C72B0",
            edgecolor="black",
            label="accuracy in bin",
        )
        gaps = [b["confidence"] for b in bins if b["count"]]
        top.plot(
            [c for c, b in zip(centers, bins, strict=True) if b["count"]],
            gaps,
            "o",
            color="#DD8452",
            label="mean confidence in bin",
        )
        top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy", fontsize=11)
        top.set_title(f"{TITLES.get(system, system)}\nECE {m['ece']:.3f}, n={m['n']}", fontsize=11)
        top.legend(loc="upper left", fontsize=9)
        bottom.bar(
            centers,
            [b["count"] for b in bins],
            width=width * 0.9,
            color="#999999",
            edgecolor="black",
        )
        bottom.set_xlabel("confidence", fontsize=11)
        bottom.set_ylabel("samples", fontsize=10)
    fig.suptitle("Reliability: is the confidence the chance of being right?", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
