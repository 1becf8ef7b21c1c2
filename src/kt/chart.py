"""The Knowledge State spider chart: one axis per topic, DKT and Bayesian mastery overlaid.

    kt chart --user tutor-0001 --out chart.png
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only: no display here or on servers
import matplotlib.pyplot as plt  # noqa: E402

from kt.topics import TOPICS  # noqa: E402

COLORS = {"DKT": "#1f77b4", "Bayesian": "#ff7f0e"}


def spider_chart(series: dict[str, dict[str, float]], title: str, out_path: str, topics: tuple[str, ...] = TOPICS) -> str:
    """Draw each series (name -> topic -> mastery in [0, 1]) on the topic axes; write a PNG."""
    angles = [2 * math.pi * i / len(topics) for i in range(len(topics))]
    fig, ax = plt.subplots(figsize=(6.4, 6.4), subplot_kw={"polar": True})
    for name, values in series.items():
        points = [float(values.get(t, float("nan"))) for t in topics]
        color = COLORS.get(name)
        ax.plot(angles + angles[:1], points + points[:1], label=name, color=color, linewidth=2)
        ax.fill(angles + angles[:1], points + points[:1], alpha=0.15, color=color)
    ax.set_xticks(angles)
    ax.set_xticklabels([t.replace("_", " ") for t in topics])
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["25%", "50%", "75%", "100%"], color="grey", fontsize=8)
    ax.set_title(title, pad=24)
    ax.legend(loc="lower right", bbox_to_anchor=(1.15, -0.1))
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
