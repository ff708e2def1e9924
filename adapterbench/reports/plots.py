"""Inline SVG line charts for the HTML report: several training runs overlaid on shared axes, readable at phone
width, no script. Every text that reaches the SVG goes through markupsafe's escaping."""

from __future__ import annotations

import math

from markupsafe import Markup, escape

from adapterbench.untrusted import visible

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; yellow left out (unreadable on white).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#999999")
WIDTH, HEIGHT = 360, 210
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 24, 30


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1) * 0.05, hi + (abs(hi) or 1) * 0.05
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [float(f"{i * step:.12g}") for i in range(start, stop + 1)]


def _tick_label(value: float, step: float) -> str:
    # As many decimals as the step needs (0.25 -> 2, 20 -> 0); 10 places absorb float noise in the step.
    decimals = len(f"{step:.10f}".rstrip("0").partition(".")[2])
    text = f"{value:.{decimals}f}"
    return "0" if text.strip("-0.") == "" else text


def smooth(points: list[tuple[float, float]], weight: float = 0.8) -> list[tuple[float, float]]:
    """TensorBoard-style exponential moving average with bias correction, for noisy per-step training loss."""
    out, avg = [], 0.0
    for i, (x, y) in enumerate(points, 1):
        avg = weight * avg + (1 - weight) * y
        out.append((x, avg / (1 - weight ** i)))
    return out


def line_chart(chart: dict) -> Markup:
    """chart: {title, y_label, series: [{run, name, style ('train' | 'eval'), points: [(step, value)]}]}. Train
    series show raw (faint) and smoothed (dashed); eval series are solid lines with a marker per evaluation."""
    points = [p for s in chart["series"] for p in s["points"]]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    # Steps span exactly the data (a run ends where it ends); values get round limits.
    x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, min(xs) + 1)
    x_ticks = [t for t in nice_ticks(x0, x1) if x0 <= t <= x1]
    y_ticks = nice_ticks(min(ys), max(ys))
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x):
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y):
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    def path(pts):
        return " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)

    parts = [Markup('<svg class="chart" viewBox="0 0 {} {}" role="img" xmlns="http://www.w3.org/2000/svg">')
             .format(WIDTH, HEIGHT),
             Markup("<title>{}</title>").format(visible(chart["title"])),
             Markup('<text x="{}" y="15" class="chart-title">{}</text>').format(LEFT, visible(chart["title"]))]
    if chart.get("lower_is_better") is not None:
        parts.append(Markup('<text x="{}" y="15" text-anchor="end" class="chart-note">{}</text>')
                     .format(WIDTH - RIGHT, "lower is better" if chart["lower_is_better"] else "higher is better"))
    y_step = y_ticks[1] - y_ticks[0]
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1
    for t in y_ticks:
        parts.append(Markup('<line x1="{0}" x2="{1}" y1="{2:.1f}" y2="{2:.1f}" class="grid"/>'
                            '<text x="{3}" y="{4:.1f}" text-anchor="end" class="tick">{5}</text>')
                     .format(LEFT, WIDTH - RIGHT, sy(t), LEFT - 4, sy(t) + 3.5, _tick_label(t, y_step)))
    for t in x_ticks:
        parts.append(Markup('<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" class="grid"/>'
                            '<text x="{0:.1f}" y="{3}" text-anchor="middle" class="tick">{4}</text>')
                     .format(sx(t), TOP, TOP + plot_h, TOP + plot_h + 12, _tick_label(t, x_step)))
    parts.append(Markup('<rect x="{}" y="{}" width="{}" height="{}" class="frame"/>').format(LEFT, TOP, plot_w, plot_h))
    parts.append(Markup('<text x="{}" y="{}" text-anchor="middle" class="axis">step</text>')
                 .format(LEFT + plot_w / 2, HEIGHT - 3))
    for s in chart["series"]:
        c = color(s["run"])
        if s["style"] == "train":
            if len(s["points"]) > 1:
                parts.append(Markup('<polyline points="{}" stroke="{}" class="raw"/>').format(path(s["points"]), c))
                parts.append(Markup('<polyline points="{}" stroke="{}" class="smooth"/>')
                             .format(path(smooth(s["points"])), c))
            else:
                parts.append(Markup('<circle cx="{:.1f}" cy="{:.1f}" r="2" fill="{}"/>')
                             .format(sx(s["points"][0][0]), sy(s["points"][0][1]), c))
            continue
        if len(s["points"]) > 1:
            parts.append(Markup('<polyline points="{}" stroke="{}" class="eval"/>').format(path(s["points"]), c))
        for x, y in s["points"]:
            parts.append(Markup('<circle cx="{:.1f}" cy="{:.1f}" r="2.8" fill="{}"><title>{}: step {}, {}</title>'
                                '</circle>').format(sx(x), sy(y), c, visible(s["name"]), x, f"{y:.4g}"))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def swatch(run: int, style: str) -> Markup:
    """A legend's line sample: dashed for smoothed training loss, solid with a dot for evaluations."""
    c = escape(color(run))
    if style == "train":
        return Markup('<svg class="swatch" viewBox="0 0 28 10" aria-hidden="true"><line x1="1" x2="27" y1="5" y2="5" '
                      'stroke="{}" class="smooth"/></svg>').format(c)
    return Markup('<svg class="swatch" viewBox="0 0 28 10" aria-hidden="true"><line x1="1" x2="27" y1="5" y2="5" '
                  'stroke="{}" class="eval"/><circle cx="14" cy="5" r="2.8" fill="{}"/></svg>').format(c, c)
