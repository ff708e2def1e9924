"""The report's three renderings: HTML through Jinja autoescape, LaTeX through its own Jinja environment
(\\VAR{...} / \\BLOCK{...}) whose finalize escapes every interpolated value by escape.py's rule, Markdown likewise;
`write_report` renders every format first, then writes each file atomically."""

from __future__ import annotations

import math
import re
from pathlib import Path

from adapterbench import escape
from adapterbench.errors import UserError
from adapterbench.untrusted import visible

TEMPLATES = Path(__file__).parent / "templates"
FORMAT_ALIASES = {"html": "html", "latex": "latex", "tex": "latex", "md": "md", "markdown": "md"}
MD_LIMIT = 65_536  # GitHub's maximum comment length, in characters
MD_TEXT = 300  # characters of a prompt or answer shown in Markdown before it is cut


class TeX(str):
    """LaTeX source our own filters built from escaped parts: the finalize step passes it through unchanged."""


class MD(str):
    """Markdown our own filters built from escaped parts."""


# --- escaping: escape.py's rules, our own TeX / MD parts passed through -------------------------------------------

def tex_escape(value) -> TeX:
    """Any value as LaTeX text that typesets literally (escape.latex_text)."""
    return value if isinstance(value, TeX) else TeX(escape.latex_text(_fmt_value(value)))


def tex_lines(value) -> TeX:
    """Multi-line text (a prompt, an answer) with its line breaks kept: non-empty lines joined by \\newline."""
    lines = [tex_escape(line) for line in _fmt_value(value).splitlines()]
    return TeX(r"\newline ".join(line for line in lines if line.strip()))


def tex_breakable(value) -> TeX:
    """Paths and hashes: escaped, with break points after / _ - so a long one wraps inside its column."""
    return TeX(re.sub(r"(/|\\_|-)", r"\1\\allowbreak{}", tex_escape(value)))


def md_escape(value) -> MD:
    """Any value as inline GitHub Markdown that renders literally (escape.markdown_text)."""
    return value if isinstance(value, MD) else MD(escape.markdown_text(_fmt_value(value)))


def md_cut(value, limit: int = MD_TEXT) -> MD:
    """md_escape of the text's first `limit` characters (an ellipsis marks the cut)."""
    text = _fmt_value(value)
    return md_escape(text if len(text) <= limit else text[:limit].rstrip() + " …")


# --- numbers -------------------------------------------------------------------------------------------------------

def _fmt_value(value) -> str:
    """A value interpolated without a number filter (a config setting, a threshold): shortest form, 2e-4 as 0.0002."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _decimals(value: float) -> int:
    magnitude = abs(value)
    return 0 if magnitude >= 1000 else 1 if magnitude >= 100 else 2 if magnitude >= 10 else 3


def num(value, decimals: int | None = None) -> str:
    """A score: 3 decimals below 10, fewer above (perplexities), U+2212 for minus, '–' for none."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if isinstance(value, int) and decimals is None:
        return f"{value:,}".replace("-", "\u2212")
    places = _decimals(value) if decimals is None else decimals
    return f"{value:,.{places}f}".replace("-", "\u2212")


def signed(value) -> str:
    text = num(value)
    return text if text.startswith(("\u2212", "n", "–")) or value == 0 else "+" + text


def interval(low, high) -> str:
    return f"[{num(low)}, {num(high)}]"


def pm(iv: dict | None) -> str:
    """'± half-width' of a value's 95 % interval, at the value's own precision; empty when it has none."""
    if not iv or iv.get("half") is None:
        return ""
    return "± " + num(iv["half"], _decimals(iv["value"]) if isinstance(iv["value"], float) else None)


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def pvalue(p) -> str:
    return "–" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def short(value, limit: int = 12) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit]


FILTERS = {"num": num, "signed": signed, "interval": interval, "pm": pm, "pct": pct, "pvalue": pvalue,
           "short": short}


# --- environments --------------------------------------------------------------------------------------------------

def _environments():
    import jinja2
    import markupsafe

    from adapterbench.reports import plots

    loader = jinja2.FileSystemLoader(str(TEMPLATES))
    # autoescape, after finalize has shown acting characters (bidi overrides, control codes) as code points
    html = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, finalize=_html_text)
    html.filters.update(FILTERS, chart=plots.line_chart, swatch=plots.swatch, color=plots.color)
    latex = jinja2.Environment(
        loader=loader, autoescape=False, undefined=jinja2.StrictUndefined, finalize=tex_escape,
        block_start_string=r"\BLOCK{", block_end_string="}", variable_start_string=r"\VAR{", variable_end_string="}",
        comment_start_string=r"\#{", comment_end_string="}", trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    latex.filters.update(FILTERS, lines=tex_lines, breakable=tex_breakable, raw=TeX)
    md = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined, finalize=md_escape,
                            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    md.filters.update(FILTERS, cut=md_cut, raw=MD,
                      html=lambda value: MD(markupsafe.escape(" ".join(visible(_fmt_value(value)).split()))))
    return {"html": html, "latex": latex, "md": md}


def _html_text(value):
    """What an HTML template prints: our own markup (charts, swatches) as it is, any other string made visible."""
    import markupsafe

    return visible(value) if isinstance(value, str) and not isinstance(value, markupsafe.Markup) else value


def parse_formats(formats) -> list[str]:
    """'html,latex,md' or a list of names (aliases: tex, markdown) -> canonical names, once each, in that order."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for item in (i.strip().lower() for i in items if i.strip()):
        if item not in FORMAT_ALIASES:
            raise UserError(f"unknown format {item!r} (expected html, latex or md)", field="--format")
        out.append(FORMAT_ALIASES[item])
    if not out:
        raise UserError("no format given (expected html, latex and/or md)", field="--format")
    return [f for f in ("html", "latex", "md") if f in out]


def render(context: dict, formats=("html", "latex", "md")) -> dict[str, str]:
    """{file name: text} for the formats asked: report.html; report.tex and report_table.tex; report.md."""
    envs = _environments()
    files = {}
    for fmt in parse_formats(formats):
        if fmt == "html":
            files["report.html"] = envs["html"].get_template("report.html.j2").render(**context)
        elif fmt == "latex":
            files["report.tex"] = envs["latex"].get_template("report.tex.j2").render(**context)
            files["report_table.tex"] = envs["latex"].get_template("table.tex.j2").render(
                **context, env="tabular", fragment=True)
        else:
            files["report.md"] = _markdown(envs["md"], context)
    return files


def _markdown(env, context: dict) -> str:
    """The Markdown report within GitHub's comment limit: fewer answers first, then cut with a note."""
    template = env.get_template("report.md.j2")
    for cap in (min(context["max_answers"], 3), 1, 0):
        text = template.render(**context, md_cap=cap)
        if len(text) <= MD_LIMIT:
            return text
    note = "\n\n*… cut here to fit a GitHub comment; the HTML report has everything.*\n"
    return text[:text.rfind("\n", 0, MD_LIMIT - len(note))] + note


def write_report(context: dict, out: str | Path, formats=("html", "latex", "md")) -> list[Path]:
    """Render every asked format, then write each file into `out` through a temporary file and a rename: a failed
    render writes nothing, and a reader never sees half a file."""
    files = render(context, formats)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a folder (expected a folder for the report)", path=out, field="--out")
    out.mkdir(parents=True, exist_ok=True)
    from adapterbench import atomic

    return [atomic.write_text(out / name, text, newline="\n") for name, text in files.items()]
