"""The mask-ratio curve of Table 4: fine-tuning accuracy against mask ratio, ours beside the paper's."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from maskalign.atomic import atomic_write
from maskalign.results import fmt
from maskalign.results.reference import Reference
from maskalign.results.tables import TableResult


def save_png(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Render ``fig`` to PNG at its own size (no tight bbox) and write it atomically.

    Figures are built as ``matplotlib.figure.Figure`` (Agg canvas), never through pyplot, so no
    GUI backend or global pyplot state is involved."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def mask_ratio_points(ref: Reference, table4: TableResult) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{"paper"|"ours": {mask type: [(ratio %, FT Acc.)...]}} from the reference and Table 4's rows."""
    ours = {}
    if not table4.data.empty:
        mine = table4.data[table4.data["source"] == "ours"]
        ours = {k: v for k, v in zip(mine["key"], mine["FT Acc."]) if fmt.is_number(v)}
    points: dict[str, dict[str, list[tuple[float, float]]]] = {"paper": {}, "ours": {}}
    for key in ref.keys("4"):
        ratio = ref.value("4", key, "Mask Ratio")
        kind = ref.text("4", key, "Mask Type")
        if ratio is None:
            continue
        paper = ref.value("4", key, "FT Acc.")
        if paper is not None:
            points["paper"].setdefault(kind, []).append((ratio * 100, paper))
        if key in ours:
            points["ours"].setdefault(kind, []).append((ratio * 100, ours[key]))
    for by_kind in points.values():
        for pts in by_kind.values():
            pts.sort()
    return points


def plot_mask_ratio(
    ref: Reference,
    table4: TableResult,
    path: str | Path,
    size: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Paper and ours on one axis: lines for attentive masking, markers for the other strategies."""
    points = mask_ratio_points(ref, table4)
    fig = Figure(figsize=size)
    ax = fig.subplots()
    styles = {
        "paper": {"color": "tab:blue", "marker": "o", "linestyle": "-"},
        "ours": {"color": "tab:orange", "marker": "s", "linestyle": "--"},
    }
    # A small-scale reproduction can sit far below the paper: then ours gets its own (right) axis.
    paper_y = [y for pts in points["paper"].values() for _, y in pts]
    ours_y = [y for pts in points["ours"].values() for _, y in pts]
    twin = bool(paper_y and ours_y) and (min(ours_y) < min(paper_y) - 5 or max(ours_y) > max(paper_y) + 5)
    axes = {"paper": ax, "ours": ax.twinx() if twin else ax}
    handles = []
    for source, by_kind in points.items():
        for kind, pts in sorted(by_kind.items()):
            xs, ys = zip(*pts)
            style = dict(styles[source])
            if kind.lower() != "attentive":
                style.update(linestyle="none", marker="x" if source == "paper" else "+", markersize=10)
            label = f"{source}: {kind.lower()}" + (" (right axis)" if twin and source == "ours" else "")
            handles += axes[source].plot(xs, ys, label=label, **style)
    if twin:
        axes["ours"].set_ylabel("ours: FT Acc. (%)", color="tab:orange")
    ax.set_ylabel(("paper: " if twin else "") + "ImageNet-1K FT Acc. (%)")
    if not points["ours"]:
        ax.text(0.02, 0.04, "ours: no Table 4 records yet", transform=ax.transAxes, color="tab:orange")
    ax.set_xlabel("mask ratio (%)")
    ax.set_title("MaskAlign: accuracy vs. mask ratio (Table 4)")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="lower center", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi)
