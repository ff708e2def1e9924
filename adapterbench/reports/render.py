"""The report's three renderings and their escaping: HTML through Jinja autoescape, LaTeX through its own Jinja
environment (\\VAR{...} / \\BLOCK{...}) whose finalize escapes every interpolated value, Markdown likewise with a
markup escape; `write_report` renders every format first, then writes each file atomically."""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

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


# --- LaTeX escaping ------------------------------------------------------------------------------------------------

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%", "_": r"\_",
    "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}", '"': r"\textquotedbl{}", "'": r"\textquotesingle{}", "`": r"\textasciigrave{}",
    "\u2212": r"\ensuremath{-}", "\u00b1": r"\ensuremath{\pm}", "\u00d7": r"\ensuremath{\times}",
    "\u2264": r"\ensuremath{\leq}", "\u2265": r"\ensuremath{\geq}", "\u2260": r"\ensuremath{\neq}",
    "\u2248": r"\ensuremath{\approx}", "\u221e": r"\ensuremath{\infty}", "\u2192": r"\ensuremath{\rightarrow}",
    "\u2190": r"\ensuremath{\leftarrow}", "\u00b7": r"\ensuremath{\cdot}", "\u2026": r"\dots{}",
}
_GREEK = dict(zip("αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩ",
                  r"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau upsilon "
                  r"phi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Phi Psi Omega".split()))
# What pdflatex prints with utf8 inputenc, T1 and TS1 (the code points t1enc.dfu and ts1enc.dfu declare); any
# other character (CJK, emoji, scripts these encodings lack) would stop the build, so it is shown as its code point.
_TEX_RANGES = (
    (0xA0, 0xB7), (0xB9, 0x125), (0x128, 0x137), (0x139, 0x13E), (0x141, 0x148), (0x14A, 0x165), (0x168, 0x17E),
    (0x192, 0x192), (0x1C4, 0x1D4), (0x1E2, 0x1E3), (0x1E6, 0x1EB), (0x218, 0x21B), (0x2010, 0x2015),
    (0x2018, 0x201A), (0x201C, 0x201E), (0x2020, 0x2022), (0x2030, 0x2031), (0x2039, 0x203A), (0x20AC, 0x20AC),
    (0x2122, 0x2122), (0xFB00, 0xFB06),
)


def _tex_printable(ch: str) -> bool:
    code = ord(ch)
    return 0x20 <= code < 0x7F or any(lo <= code <= hi for lo, hi in _TEX_RANGES)


def _tex_char(ch: str, following: str) -> str | None:
    """One character as LaTeX; None where pdflatex has no glyph for it."""
    if ch == "-":
        return "-{}" if following == "-" else "-"  # no en/em-dash ligature: "--" stays two hyphens
    if ch.isspace() and ch != "\u00a0":
        return " "
    if ch in _TEX_SPECIAL:
        return _TEX_SPECIAL[ch]
    if ch in _GREEK:
        return rf"\ensuremath{{\{_GREEK[ch]}}}"
    if _tex_printable(ch):
        return ch
    folded = unicodedata.normalize("NFKC", ch)  # full-width letters, circled digits... -> their plain form
    if folded != ch and all(_tex_printable(c) or c in _TEX_SPECIAL for c in folded):
        return tex_escape(folded)
    return "" if unicodedata.category(ch) in ("Mn", "Cf") else None  # a stray combining mark, a zero-width char


def tex_escape(value) -> TeX:
    """Any value as LaTeX text that typesets literally: specials escaped, whitespace runs (newlines included) made
    one space, Greek and common math signs set in math mode, characters pdflatex cannot print shown as
    [U+XXXX] in typewriter type."""
    if isinstance(value, TeX):
        return value
    text = unicodedata.normalize("NFC", _fmt_value(value))  # "e" + combining acute -> "é", which T1 has
    out, unknown = [], []
    for i, ch in enumerate(text):
        piece = _tex_char(ch, text[i + 1:i + 2])
        if piece is None:
            unknown.append(ch)
            continue
        if unknown:
            out.append(_code_points(unknown))
            unknown.clear()
        if piece != " " or (out and out[-1] != " "):
            out.append(piece)
    if unknown:
        out.append(_code_points(unknown))
    return TeX("".join(out))


def _code_points(chars: list[str]) -> str:
    return r"{\ttfamily[" + " ".join(f"U+{ord(c):04X}" for c in chars) + "]}"


def tex_lines(value) -> TeX:
    """Multi-line text (a prompt, an answer) with its line breaks kept: non-empty lines joined by \\newline."""
    lines = [tex_escape(line) for line in _fmt_value(value).splitlines()]
    return TeX(r"\newline ".join(line for line in lines if line.strip()))


def tex_breakable(value) -> TeX:
    """Paths and hashes: escaped, with break points after / _ - so a long one wraps inside its column."""
    return TeX(re.sub(r"(/|\\_|-)", r"\1\\allowbreak{}", tex_escape(value)))


# --- Markdown escaping ---------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")
# What would open a list or heading at a line's start; a backslash escapes only punctuation, so "1." becomes "1\\.".
_MD_LINE_START = re.compile(r"^(?:([-+#])|(\d+)([.)]))(?=\s|$)")


def md_escape(value) -> MD:
    """Any value as inline GitHub Markdown that renders literally: punctuation with a meaning backslash-escaped,
    & < > as entities (no raw HTML gets through), line breaks as <br>, @ kept from mentioning anyone."""
    if isinstance(value, MD):
        return value
    text = visible(_fmt_value(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text).replace("@", "@\u200b")
    text = "<br>".join(text.splitlines())
    return MD(_MD_LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text, count=1))


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
    from adapterbench.atomic import atomic_file

    for name, text in files.items():
        with atomic_file(out / name, newline="\n") as f:
            f.write(text)
    return [out / name for name in files]
