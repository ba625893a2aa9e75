"""Figures of the benchmark and the demo, through matplotlib (Agg, no display): R-D curves as
small multiples (one panel per image, shared legend) and labelled image panels.
``rd_figure_svg`` is the earlier dependency-free SVG writer, kept for environments without it."""
from __future__ import annotations

import math
from html import escape

COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def rd_figure_svg(panels: list[tuple[str, dict[str, list[tuple[float, float]]]]], xlabel: str, ylabel: str,
              cols: int = 3, w: int = 320, h: int = 240) -> str:
    """``panels``: (title, {curve name: [(x, y), ...]}). Every panel has its own axes; the legend
    (shared colours) is on top."""
    names = list(dict.fromkeys(n for _, curves in panels for n in curves))
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    rows = max(1, math.ceil(len(panels) / cols))
    top, ml, mb, mt, mr = 28, 48, 36, 22, 10
    W, H = cols * w, top + rows * h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="10">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    x = 10
    for n in names:
        out.append(f'<line x1="{x}" y1="12" x2="{x + 18}" y2="12" stroke="{color[n]}" stroke-width="2"/>'
                   f'<text x="{x + 22}" y="16">{escape(n)}</text>')
        x += 30 + 7 * len(n)
    for i, (title, curves) in enumerate(panels):
        ox, oy = (i % cols) * w, top + (i // cols) * h
        pts = [(a, b) for c in curves.values() for a, b in c if math.isfinite(a) and math.isfinite(b)]
        if not pts:
            continue
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        if x1 == x0:
            x1 = x0 + 1
        if y1 == y0:
            y1 = y0 + 1
        px = lambda v: ox + ml + (v - x0) / (x1 - x0) * (w - ml - mr)  # noqa: E731
        py = lambda v: oy + mt + (1 - (v - y0) / (y1 - y0)) * (h - mt - mb)  # noqa: E731
        out.append(f'<text x="{ox + w / 2}" y="{oy + 14}" text-anchor="middle" font-weight="bold">{escape(title)}</text>')
        out.append(f'<rect x="{ox + ml}" y="{oy + mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="none" stroke="#999"/>')
        for t in _ticks(x0, x1):
            out.append(f'<text x="{px(t):.1f}" y="{oy + h - mb + 12}" text-anchor="middle">{t:g}</text>')
        for t in _ticks(y0, y1):
            out.append(f'<line x1="{ox + ml}" x2="{ox + w - mr}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                       f'<text x="{ox + ml - 4}" y="{py(t) + 3:.1f}" text-anchor="end">{t:.4g}</text>')
        out.append(f'<text x="{ox + ml + (w - ml - mr) / 2}" y="{oy + h - 6}" text-anchor="middle">{escape(xlabel)}</text>')
        out.append(f'<text transform="translate({ox + 11},{oy + mt + (h - mt - mb) / 2}) rotate(-90)" '
                   f'text-anchor="middle">{escape(ylabel)}</text>')
        for n, c in curves.items():
            c = [(a, b) for a, b in c if math.isfinite(a) and math.isfinite(b)]
            if not c:
                continue
            path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in sorted(c))
            out.append(f'<polyline points="{path}" fill="none" stroke="{color[n]}" stroke-width="1.5"/>')
            out += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2" fill="{color[n]}"/>' for a, b in c]
    out.append("</svg>")
    return "\n".join(out)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def rd_figure(panels: list[tuple[str, dict[str, list[tuple[float, float]]]]], xlabel: str, ylabel: str,
              cols: int = 3) -> str:
    """``panels``: (title, {curve name: [(x, y), ...]}) -> SVG text (matplotlib): one panel per
    image with its own axes, log-scaled bits per pixel, one legend for all."""
    import io

    plt = _plt()
    names = list(dict.fromkeys(n for _, curves in panels for n in curves))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, curves) in zip(axes.flat, panels):
        for i, n in enumerate(names):
            pts = sorted(p for p in curves.get(n, []) if p[1] is not None and math.isfinite(p[1]))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2,
                        color=COLORS[i % len(COLORS)], label=n)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], color=COLORS[i % len(COLORS)], marker="o", ms=3, label=n) for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(names), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.2 * rows + 0.6)))
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # no timestamp: reruns give the same file
    plt.close(fig)
    return buf.getvalue()


def image_grid(rows: list[list], titles: list[list[str]], row_labels: list[str] | None = None,
               suptitle: str | None = None, cell: float = 3.0) -> bytes:
    """Labelled grey-scale panels ([0, 1] arrays) -> PNG bytes (matplotlib)."""
    import io

    import numpy as np

    plt = _plt()
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(cell * nc, cell * nr + (0.4 if suptitle else 0)), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row) and row[j] is not None:
                ax.imshow(np.clip(row[j], 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(titles[i][j], fontsize=8)
            else:
                ax.set_axis_off()
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
