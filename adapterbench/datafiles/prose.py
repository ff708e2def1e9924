"""Paragraphs of prose from a text or Markdown file: blank-line separated; in Markdown, code blocks, HTML comments,
headings, links, images and emphasis go (d2l-book's roles and [**marks**] too) unless asked to keep them."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")
_DIRECTIVE = re.compile(r"^\s*(:[\w-]+:(`[^`]*`)?[\s,.]*)+$")  # a line of d2l roles only: :label:`x`, :end_tab:
_ROLE = re.compile(r"\s*:cite[tp]?:`[^`]*`|:[\w-]+:`([^`]*)`")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_LINKS_ONLY = re.compile(r"\s*(!?\[[^\]]*\]\([^)]*\)[\s.,;]*)+")
_D2L_MARK = re.compile(r"\[\*\*(.+?)\*\*\]|\(\*\*(.+?)\*\*\)", re.S)  # d2l's [**text tied to code**]
_PROTECTED = re.compile(r"(\$\$.*?\$\$|\$[^$]+\$|`[^`]*`)", re.S)  # math and inline code keep their * and _
_STRONG = re.compile(r"(?<![\w*\\])(\*\*|__)(\S(?:.*?\S)?)\1(?![\w*])", re.S)
_EMPH = re.compile(r"(?<![\w*\\])([*_])(\S(?:.*?\S)?)\1(?![\w*])", re.S)
_ESCAPED = re.compile(r"\\([*_])")


def _drop_comments(line: str, in_comment: bool) -> tuple[str, bool]:
    """The line without HTML comments; a comment may span lines, so whether one is open carries over."""
    kept = []
    while line:
        marker = "-->" if in_comment else "<!--"
        at = line.find(marker)
        if at < 0:
            if not in_comment:
                kept.append(line)
            break
        if not in_comment:
            kept.append(line[:at])
        line, in_comment = line[at + len(marker):], not in_comment
    return "".join(kept), in_comment


def _clean_inline(text: str) -> str:
    text = _LINK.sub(r"\1", _IMAGE.sub("", text))
    text = _ROLE.sub(lambda m: m[1] or "", text)  # citations go; :numref:`x` keeps its target x
    text = _D2L_MARK.sub(lambda m: m[1] or m[2], text)
    parts = _PROTECTED.split(text)
    parts[::2] = [_ESCAPED.sub(r"\1", _EMPH.sub(r"\2", _STRONG.sub(r"\2", part))) for part in parts[::2]]
    return "".join(parts)


def paragraphs(text: str, markdown: bool, keep_code: bool, keep_markup: bool) -> list[str]:
    """Blank-line separated paragraphs; markdown loses code blocks and markup unless asked to keep them."""
    clean, paragraphs, lines = markdown and not keep_markup, [], []
    fence, code, in_comment = None, [], False

    def flush():
        paragraph = "\n".join(lines).strip()
        lines.clear()
        if clean:  # a paragraph of links only is navigation ("[Discussions](url)"), not prose
            paragraph = "" if _LINKS_ONLY.fullmatch(paragraph) else _clean_inline(paragraph).strip()
        if paragraph:
            paragraphs.append(paragraph)

    for line in text.split("\n"):
        line = line.rstrip()
        marker = _FENCE.match(line) if markdown else None
        if fence is None and marker:
            flush()
            fence, code = marker[1], [line]
        elif fence is not None:
            code.append(line)
            if marker and marker[1][0] == fence[0] and len(marker[1]) >= len(fence) and not marker[2].strip():
                fence = None
                if keep_code:
                    paragraphs.append("\n".join(code))
        elif not line:
            flush()
        elif clean:
            line, in_comment = _drop_comments(line, in_comment)
            if _HEADING.match(line):
                flush()
            elif line.strip() and not _DIRECTIVE.match(line):  # markup-only lines go without ending a paragraph
                lines.append(line)
        else:
            lines.append(line)
    if fence is not None and keep_code:  # an unclosed fence runs to the end of the file
        paragraphs.append("\n".join(code))
    flush()
    return paragraphs
