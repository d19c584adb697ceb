"""PNG charts for docs/benchmarks.md: matplotlib when it is installed, else drawn with Pillow.

    line(path, title, xlabel, ylabel, [(label, xs, ys), ...], hlines=[(label, y)])
    boxes(path, title, xlabel, {label: values}, log=False)      # latency distributions
    scatter(path, title, xlabel, ylabel, [(label, xs, ys), ...], diagonal=True)
    bars(path, title, ylabel, {label: value})
"""
from __future__ import annotations

import math
from pathlib import Path

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#17becf", "#bcbd22"]
WIDTH, HEIGHT = 900, 480


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def backend() -> str:
    return "matplotlib" if _matplotlib() else "pillow"


# ---------------------------------------------------------------- matplotlib

def _save(plt, fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)   # pyplot keeps every open figure alive until it is closed


def _mpl_line(plt, path, title, xlabel, ylabel, series, hlines):
    fig, ax = plt.subplots(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    for i, (label, xs, ys) in enumerate(series):
        ax.plot(xs, ys, label=label, color=COLORS[i % len(COLORS)], linewidth=1.5)
    for label, y in hlines:
        ax.axhline(y, linestyle="--", color="#444444", linewidth=1, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    _save(plt, fig, path)


def _mpl_boxes(plt, path, title, xlabel, groups, log):
    fig, ax = plt.subplots(figsize=(WIDTH / 100, max(2.5, 0.55 * len(groups) + 1.5)), dpi=100)
    labels = list(groups)
    ax.boxplot([groups[k] for k in labels], vert=False, whis=(5, 95), showfliers=True)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    if log:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel)
    ax.grid(alpha=0.3, axis="x")
    _save(plt, fig, path)


def _mpl_scatter(plt, path, title, xlabel, ylabel, series, diagonal):
    fig, ax = plt.subplots(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    top = 0.0
    for i, (label, xs, ys) in enumerate(series):
        ax.scatter(xs, ys, label=label, color=COLORS[i % len(COLORS)], s=18)
        top = max([top, *xs, *ys])
    if diagonal:
        ax.plot([0, top], [0, top], linestyle="--", color="#444444", linewidth=1, label="predicted = measured")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)


def _mpl_bars(plt, path, title, ylabel, values):
    fig, ax = plt.subplots(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    labels = list(values)
    ax.bar(labels, [values[k] for k in labels], color=[COLORS[i % len(COLORS)] for i in range(len(labels))])
    ax.set(title=title, ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    _save(plt, fig, path)


# ---------------------------------------------------------------- Pillow

def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while True:
        ticks.append(round(value, 10))
        if value >= high - step * 1e-9:
            return ticks
        value += step


def _label(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


class _Canvas:
    """A plot area with linear or log axes, drawn on a white Pillow image."""

    def __init__(self, title, xlabel, ylabel, xr, yr, height=HEIGHT, xlog=False, left=80, xticks=True,
                 legend=False):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (WIDTH, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        # The legend goes right of the plot, where it covers no data.
        self.box = (left, 40, WIDTH - (200 if legend else 30), height - 55)
        self.xlog = xlog
        if xlog:
            xr = (math.log10(max(xr[0], 1e-9)), math.log10(max(xr[1], 1e-9)))
            lo, hi = math.floor(xr[0]), math.ceil(xr[1])
            self.xticks = [float(10 ** e) for e in range(lo, hi + 1)]
            self.xr = (lo, hi if hi > lo else lo + 1)
        else:
            self.xticks = _nice_ticks(*xr)
            self.xr = (self.xticks[0], self.xticks[-1])
        self.yticks = _nice_ticks(*yr) if yr else []
        self.yr = (self.yticks[0], self.yticks[-1]) if yr else (0, 1)
        font = _font(16)
        self.draw.text((WIDTH / 2, 12), title, fill="black", font=font, anchor="mt")
        self.draw.text((WIDTH / 2, height - 8), xlabel, fill="black", font=_font(), anchor="mb")
        if ylabel:
            label = Image.new("RGB", (height, 20), "white")
            from PIL import ImageDraw as D

            D.Draw(label).text((height / 2, 10), ylabel, fill="black", font=_font(), anchor="mm")
            self.image.paste(label.rotate(90, expand=True), (4, 0))
        x0, y0, x1, y1 = self.box
        for tick in self.xticks if xticks else []:
            x = self.x(tick)
            self.draw.line([(x, y0), (x, y1)], fill="#e6e6e6")
            self.draw.text((x, y1 + 6), _label(tick), fill="black", font=_font(12), anchor="mt")
        for tick in self.yticks:
            y = self.y(tick)
            self.draw.line([(x0, y), (x1, y)], fill="#e6e6e6")
            self.draw.text((x0 - 6, y), _label(tick), fill="black", font=_font(12), anchor="rm")
        self.draw.rectangle(self.box, outline="black")
        self.legend: list[tuple[str, str, str]] = []

    def x(self, value: float) -> float:
        if self.xlog:
            value = math.log10(max(value, 1e-9))
        x0, _, x1, _ = self.box
        return x0 + (value - self.xr[0]) / (self.xr[1] - self.xr[0]) * (x1 - x0)

    def y(self, value: float) -> float:
        _, y0, _, y1 = self.box
        return y1 - (value - self.yr[0]) / (self.yr[1] - self.yr[0]) * (y1 - y0)

    def add_legend(self, label: str, color: str, style: str = "line") -> None:
        self.legend.append((label, color, style))

    def save(self, path) -> None:
        if self.legend:
            font = _font(12)
            x0, y0 = self.box[2] + 8, self.box[1]
            for i, (label, color, style) in enumerate(self.legend):
                y = y0 + 12 + 18 * i
                if style == "dot":
                    self.draw.ellipse((x0 + 10, y - 4, x0 + 18, y + 4), fill=color)
                else:
                    self.draw.line([(x0 + 6, y), (x0 + 26, y)], fill=color, width=3 if style == "line" else 1)
                self.draw.text((x0 + 32, y), label, fill="black", font=font, anchor="lm")
        self.image.save(path)


def _pil_line(path, title, xlabel, ylabel, series, hlines):
    xs_all = [x for _, xs, _ in series for x in xs] or [0, 1]
    ys_all = [y for _, _, ys in series for y in ys] + [y for _, y in hlines] or [0, 1]
    canvas = _Canvas(title, xlabel, ylabel, (min(xs_all), max(xs_all)), (min(0, min(ys_all)), max(ys_all) * 1.05),
                     legend=True)
    for i, (label, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        points = [(canvas.x(x), canvas.y(y)) for x, y in zip(xs, ys)]
        if len(points) > 1:
            canvas.draw.line(points, fill=color, width=2)
        elif points:
            canvas.draw.ellipse((points[0][0] - 3, points[0][1] - 3, points[0][0] + 3, points[0][1] + 3), fill=color)
        canvas.add_legend(label, color)
    for label, y in hlines:
        x0, _, x1, _ = canvas.box
        for start in range(int(x0), int(x1), 12):
            canvas.draw.line([(start, canvas.y(y)), (min(start + 6, x1), canvas.y(y))], fill="#444444", width=1)
        canvas.add_legend(label, "#444444", "dash")
    canvas.save(path)


def _pil_boxes(path, title, xlabel, groups, log):
    values = [v for vs in groups.values() for v in vs] or [1]
    low, high = min(values), max(values)
    if not log:
        low = min(0, low)
    height = max(200, 60 * len(groups) + 100)
    labels = list(groups)
    left = 40 + max(len(k) for k in labels) * 8
    canvas = _Canvas(title, xlabel, "", (low, high * 1.05), None, height=height, xlog=log, left=left)
    x0, y0, x1, y1 = canvas.box
    row = (y1 - y0) / len(labels)
    from .common import percentile

    for i, label in enumerate(labels):
        vs = groups[label]
        cy = y0 + row * (i + 0.5)
        canvas.draw.text((x0 - 8, cy), label, fill="black", font=_font(12), anchor="rm")
        if not vs:
            continue
        color = COLORS[i % len(COLORS)]
        p5, p25, p50, p75, p95 = (percentile(vs, q) for q in (5, 25, 50, 75, 95))
        half = min(16, row * 0.3)
        canvas.draw.line([(canvas.x(p5), cy), (canvas.x(p25), cy)], fill="black")
        canvas.draw.line([(canvas.x(p75), cy), (canvas.x(p95), cy)], fill="black")
        for edge in (p5, p95):
            canvas.draw.line([(canvas.x(edge), cy - half / 2), (canvas.x(edge), cy + half / 2)], fill="black")
        canvas.draw.rectangle((canvas.x(p25), cy - half, max(canvas.x(p75), canvas.x(p25) + 1), cy + half),
                              fill=color, outline="black")
        canvas.draw.line([(canvas.x(p50), cy - half), (canvas.x(p50), cy + half)], fill="white", width=2)
        for v in vs:
            if v < p5 or v > p95:
                canvas.draw.ellipse((canvas.x(v) - 2, cy - 2, canvas.x(v) + 2, cy + 2), outline="black")
    canvas.draw.text((x1 - 4, y1 - 4), "box: p25-p75, white: p50, whiskers: p5-p95", fill="#555555",
                     font=_font(11), anchor="rb")
    canvas.save(path)


def _pil_scatter(path, title, xlabel, ylabel, series, diagonal):
    values = [v for _, xs, ys in series for v in list(xs) + list(ys)] or [1]
    top = max(values) * 1.05
    canvas = _Canvas(title, xlabel, ylabel, (0, top), (0, top), legend=True)
    if diagonal:
        canvas.draw.line([(canvas.x(0), canvas.y(0)), (canvas.x(canvas.xr[1]), canvas.y(canvas.xr[1]))],
                         fill="#444444")
        canvas.add_legend("predicted = measured", "#444444", "dash")
    for i, (label, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        for x, y in zip(xs, ys):
            canvas.draw.ellipse((canvas.x(x) - 4, canvas.y(y) - 4, canvas.x(x) + 4, canvas.y(y) + 4), fill=color)
        canvas.add_legend(label, color, "dot")
    canvas.save(path)


def _pil_bars(path, title, ylabel, values):
    labels = list(values)
    canvas = _Canvas(title, "", ylabel, (0, len(labels)), (0, max(values.values(), default=1) * 1.1), xticks=False)
    for i, label in enumerate(labels):
        left, right = canvas.x(i + 0.2), canvas.x(i + 0.8)
        canvas.draw.rectangle((left, canvas.y(values[label]), right, canvas.y(0)), fill=COLORS[i % len(COLORS)])
        canvas.draw.text(((left + right) / 2, canvas.box[3] + 6), label, fill="black", font=_font(12), anchor="mt")
        canvas.draw.text(((left + right) / 2, canvas.y(values[label]) - 4), _label(round(values[label], 2)),
                         fill="black", font=_font(12), anchor="mb")
    canvas.save(path)


# ---------------------------------------------------------------- the API

def line(path, title, xlabel, ylabel, series, hlines=()):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plt = _matplotlib()
    if plt:
        _mpl_line(plt, path, title, xlabel, ylabel, series, list(hlines))
    else:
        _pil_line(path, title, xlabel, ylabel, series, list(hlines))


def boxes(path, title, xlabel, groups, log=False):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    groups = {k: v for k, v in groups.items() if v}
    plt = _matplotlib()
    if plt:
        _mpl_boxes(plt, path, title, xlabel, groups, log)
    else:
        _pil_boxes(path, title, xlabel, groups, log)


def scatter(path, title, xlabel, ylabel, series, diagonal=True):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plt = _matplotlib()
    if plt:
        _mpl_scatter(plt, path, title, xlabel, ylabel, series, diagonal)
    else:
        _pil_scatter(path, title, xlabel, ylabel, series, diagonal)


def bars(path, title, ylabel, values):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plt = _matplotlib()
    if plt:
        _mpl_bars(plt, path, title, ylabel, values)
    else:
        _pil_bars(path, title, ylabel, values)
