"""Untrusted text (model answers, data, labels, file names) made safe to show: characters that act on what follows
instead of printing (terminal escape sequences, other control codes, bidi overrides that reorder a line) are shown
as [U+XXXX]. Each output format's one escape place calls `visible` (HTML, Markdown, JUnit, the terminal)."""

from __future__ import annotations

import re

# C0 controls but tab and newline (ESC starts terminal sequences; a CR not ending a line rewrites it), DEL, C1, and
# the bidi controls that reorder text ("Trojan Source", CVE-2021-42574): the ALM, LRM/RLM, embeddings, overrides
# and isolates.
_ACTING = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def visible(text) -> str:
    """`text` with every acting character replaced by its code point, e.g. "\\x1b[2J" -> "[U+001B][2J"."""
    return _ACTING.sub(lambda m: f"[U+{ord(m[0]):04X}]", str(text))


def visible_json(text: str) -> str:
    """JSON text with every acting character written as its \\u escape: the same JSON value, safe in a terminal
    (json.dumps(ensure_ascii=False) escapes C0 controls but leaves C1 and bidi controls raw)."""
    return _ACTING.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
