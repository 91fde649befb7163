"""The Pareto plot of a study as a PNG for a paper (matplotlib, bundled fonts only).

The interactive plots are plotly dicts in :mod:`ablate.results.figures`; a paper needs a
static image that renders the same without a browser, so this one figure is drawn with
matplotlib. It is apart from the table renderers because it needs matplotlib and nothing
of the table.
"""

from __future__ import annotations

import io

from ablate.results import stats
from ablate.results.reader import StudyResults

__all__ = ["pareto_png"]


def pareto_png(results: StudyResults, *, dpi: int = 200) -> bytes:
    """The Pareto plot for a paper (matplotlib, bundled fonts only).

    Trials by family; with repeats, each configuration's mean with its 95 % intervals as
    error bars (trials faded behind), the configurations indistinguishable from the
    front as open diamonds, and the front of the means as steps.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ablate.results.figures import axes_of, config_points, label_of, pareto_points

    x, y = axes_of(results)
    pts = pareto_points(results, x, y)
    pts = pts[pts["state"] == "COMPLETE"]
    configs = config_points(results, x, y)
    repeated = not configs.empty and int(configs["n"].max()) >= 2
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=dpi)
    try:
        markers = "osD^v<>ph*"
        for i, (family, group) in enumerate(pts.groupby("family", sort=True)):
            ax.scatter(group["x"], group["y"], s=14 if repeated else 28, marker=markers[i % len(markers)],
                       label=family, alpha=0.35 if repeated else 0.8, edgecolors="#333", linewidths=0.5, zorder=3)
        if repeated:
            for kind, style in (("other", {"fmt": "o", "color": "#555", "mfc": "#555", "label": "configuration mean"}),
                                ("near", {"fmt": "D", "color": "#ff7f0e", "mfc": "white",
                                          "label": "indistinguishable from the front"}),
                                ("front", {"fmt": "o", "color": "#d62728", "mfc": "#d62728", "label": None})):
                sub = configs[configs["kind"] == kind]
                if sub.empty:
                    continue
                ax.errorbar(sub["x"], sub["y"], xerr=[sub["x_minus"], sub["x_plus"]],
                            yerr=[sub["y_minus"], sub["y_plus"]], fmt=style["fmt"], color=style["color"],
                            mfc=style["mfc"], ms=5, elinewidth=1, capsize=2, label=style["label"], zorder=4)
        front = configs[configs["kind"] == "front"].sort_values("x")
        if not front.empty:
            x_min = next((o["direction"] == "minimize" for o in results.objectives if o["name"] == x), True)
            ax.step(front["x"], front["y"], where="post" if x_min else "pre", color="#d62728", lw=1.5,
                    label="Pareto front" + (" of the means" if repeated else ""), zorder=2)
            for r in front.itertuples(index=False):
                ax.annotate(str(r.first), (r.x, r.y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(label_of(x))
        ax.set_ylabel(label_of(y))
        title = results.name if repeated or configs.empty else f"{results.name} ({stats.ONE_SEED})"
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if not pts.empty:
            ax.legend(fontsize=7, title="attention", title_fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
