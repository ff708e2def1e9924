"""Escape rules, one per output format: untrusted text (labels, task names, prompts, answers, notes) as Markdown,
LaTeX, XML or a spreadsheet's CSV cell that shows literally and acts on nothing. Acting characters are shown as
[U+XXXX] (untrusted.visible) or, in LaTeX, as the code points pdflatex cannot print."""

from __future__ import annotations

import re
import unicodedata

from adapterbench.untrusted import visible

# --- CSV -----------------------------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """A cell a spreadsheet shows as text: model answers and data are untrusted, and Excel or LibreOffice would run
    a cell such as =HYPERLINK(...), so one that starts like a formula gets a leading ' (OWASP's advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


# --- Markdown ------------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")
# What would open a list or heading at a line's start; a backslash escapes only punctuation, so "1." becomes "1\\.".
_MD_LINE_START = re.compile(r"^(?:([-+#])|(\d+)([.)]))(?=\s|$)")


def markdown_text(text: str) -> str:
    """`text` as inline GitHub Markdown that renders literally, in a table cell too: punctuation with a meaning
    (the cell's | included) backslash-escaped, & < > as entities (no raw HTML gets through), line breaks as <br>,
    @ kept from mentioning anyone."""
    text = visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text).replace("@", "@\u200b")
    text = "<br>".join(text.splitlines())
    return _MD_LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text, count=1)


def markdown_code(text: str) -> str:
    """`text` for inside a `code span`, where nothing but a backtick acts: backticks become ', line breaks spaces."""
    return visible(text).replace("`", "'").replace("\r", " ").replace("\n", " ")


# --- XML -----------------------------------------------------------------------------------------------------------

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: str) -> str:
    """`text` for an ElementTree attribute or element: ElementTree escapes <, & and quotes itself; characters XML 1.0
    cannot hold at all are dropped."""
    return _XML_ILLEGAL.sub("", visible(text))


# --- LaTeX ---------------------------------------------------------------------------------------------------------

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


def latex_text(text: str) -> str:
    """`text` as LaTeX that typesets literally: specials escaped, whitespace runs (newlines included) made one space,
    Greek and common math signs set in math mode, characters pdflatex cannot print shown as [U+XXXX] in typewriter
    type."""
    text = unicodedata.normalize("NFC", text)  # "e" + combining acute -> "é", which T1 has
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
    return "".join(out)


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
        return latex_text(folded)
    return "" if unicodedata.category(ch) in ("Mn", "Cf") else None  # a stray combining mark, a zero-width char


def _code_points(chars: list[str]) -> str:
    return r"{\ttfamily[" + " ".join(f"U+{ord(c):04X}" for c in chars) + "]}"
