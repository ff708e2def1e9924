"""Users' data files read into normalized records of five kinds: JSONL, CSV and TSV rows, or the paragraphs of
.md/.txt files; every problem is a UserError naming the file, line and field, and `check_file` collects them all."""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections import Counter
from pathlib import Path

from adapterbench import paths
from adapterbench.datafiles.prose import paragraphs
from adapterbench.errors import UserError

KINDS = ("text", "instruction", "multiple_choice", "classification", "chat")
# Canonical fields per kind; `fields` maps these onto the user's column names.
FIELDS = {
    "text": ("id", "text"),
    "instruction": ("id", "instruction", "input", "output"),
    "multiple_choice": ("id", "question", "choices", "answer"),
    "classification": ("id", "text", "context", "label"),
    "chat": ("id", "messages"),
}
REQUIRED = {"text": ("text",), "instruction": ("instruction", "output"),
            "multiple_choice": ("question", "answer"), "classification": ("text", "label"), "chat": ("messages",)}
ROLES = ("system", "user", "assistant")
# ShareGPT's turns are {from, value}; its speakers map onto the OpenAI roles that chat templates read
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
TABLE_EXTS = {".jsonl": None, ".csv": ",", ".tsv": "\t"}  # value: the CSV delimiter
TEXT_EXTS = (".md", ".txt")
_MISSING = object()

_LETTER = re.compile(r"\(?([A-Za-z])[).:]?")
_INT = re.compile(r"[+-]?\d+")


def _hint(value, options) -> str:
    close = difflib.get_close_matches(str(value), list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _json_type(v) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(v), type(v).__name__)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)}){_hint(kind, KINDS)}")


def _check_fields(kind: str, fields: dict | None) -> dict:
    fields = dict(fields or {})
    for canonical in fields:
        if canonical not in FIELDS[kind]:
            raise UserError(f"unknown field {canonical!r} for kind {kind} (expected one of: "
                            f"{', '.join(FIELDS[kind])}){_hint(canonical, FIELDS[kind])}")
    return fields


def _check_labels(labels: list | None) -> list | None:
    if labels is None:
        return None
    labels = [str(label).strip() for label in labels]
    dupes = [label for label, k in Counter(labels).items() if k > 1]
    if not labels or not all(labels) or dupes:
        raise UserError(f"label list {','.join(labels)!r} has empty or repeated names (expected distinct names)")
    return labels


def read_text(path) -> str:
    """The text of a UTF-8 file (a BOM dropped) that is a regular file (a FIFO would block forever) and holds no NUL
    byte (a binary file, or one a spreadsheet export damaged)."""
    path = paths.input_file(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror}", path=path) from None
    if b"\x00" in raw:
        pos = raw.index(b"\x00")
        raise UserError(f"NUL byte at byte offset {pos} (expected text; is this a binary file?)", path=path,
                        line=raw.count(b"\n", 0, pos) + 1)
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        pos = skip + e.start
        raise UserError(f"not valid UTF-8: byte 0x{raw[pos]:02x} at byte offset {pos} (expected UTF-8 text; "
                        "re-save the file as UTF-8)", path=path, line=raw.count(b"\n", 0, pos) + 1) from None


def _jsonl_rows(text: str, path: Path):
    # Split on "\n" only: str.splitlines would also break on U+2028, which JSON strings may hold raw.
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield line_no, UserError(f"malformed JSON: {e.msg} at column {e.colno} (expected one JSON object "
                                     "per line)", path=path, line=line_no)
            continue
        if not isinstance(row, dict):
            row = UserError(f"expected a JSON object per line, got {_json_type(row)}", path=path, line=line_no)
        yield line_no, row


def jsonl_objects(path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line of a JSONL file; a malformed line raises its UserError."""
    path = Path(path)
    rows = []
    for line_no, row in _jsonl_rows(read_text(path), path):
        if isinstance(row, UserError):
            raise row
        rows.append((line_no, row))
    return rows


def _choice_keys(row) -> list[str]:
    for name in (lambda i: f"choice{i}", lambda i: chr(65 + i)):
        keys = []
        while len(keys) < 26 and name(len(keys)) in row:
            keys.append(name(len(keys)))
        if keys:
            return keys
    return []


def _check_header(header: list, kind: str, fields: dict, path: Path, line: int) -> None:
    dupes = [c for c, k in Counter(header).items() if k > 1]
    if dupes:
        raise UserError(f"column {dupes[0]!r} appears twice in the header (expected distinct names)",
                        path=path, line=line)
    for canonical in REQUIRED[kind] + (("choices",) if kind == "multiple_choice" else ()):
        col = fields.get(canonical, canonical)
        if col in header or (canonical == "choices" and _choice_keys(header)):
            continue
        expected = "a 'choices' column, columns choice0..choiceN, or columns A, B, C.." if canonical == "choices" \
            else f"this column; map yours with --field {canonical}=COLUMN"
        raise UserError(f"missing column (expected {expected}; header: {', '.join(header)})",
                        path=path, line=line, field=col)


def _csv_rows(text: str, path: Path, delimiter: str, kind: str, fields: dict):
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header, prev = None, 0
    try:
        for row in reader:
            # line_num is where the row ends; a quoted cell may span lines, so report where it starts
            start, prev = prev + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                _check_header(header, kind, fields, path, start)
            elif len(row) > len(header):
                yield start, UserError(f"{len(row)} cells for {len(header)} columns (expected {len(header)}; quote "
                                       "cells that contain the delimiter)", path=path, line=start)
            else:
                yield start, dict(zip(header, row))
    except csv.Error as e:
        raise UserError(f"unreadable CSV: {e}", path=path, line=reader.line_num) from None


def _lookup(row: dict, col: str):
    if col in row or "." not in col:
        return row.get(col, _MISSING)
    value = row  # a dotted path into nested JSON, e.g. instances.0.output
    for part in col.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def text_value(value, field: str, where: dict, integers: bool = False) -> str:
    """A text field's value: a string (JSON null: empty). Numbers are refused, since their text is not the user's
    (NaN would read "nan", 1e21 "1e+21", a pandas float column's 7 "7.0"); ids and labels may be whole numbers."""
    if value is None:
        return ""
    if isinstance(value, str) or (integers and isinstance(value, int) and not isinstance(value, bool)):
        return str(value).strip()
    got = f"number {value!r}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _json_type(value)
    raise UserError(f"expected a string, got {got} (write text in quotes)", field=field, **where)


def _get(row: dict, canonical: str, fields: dict, where: dict, required: bool = True) -> str:
    col = fields.get(canonical, canonical)
    value = _lookup(row, col)
    if value is _MISSING:
        if required:
            raise UserError("missing (expected a non-empty string)", field=col, **where)
        return ""
    text = text_value(value, col, where, integers=canonical == "label")
    if required and not text:
        raise UserError("empty (expected a non-empty string)", field=col, **where)
    return text


def _choices(row: dict, fields: dict, where: dict) -> list[str]:
    col = fields.get("choices", "choices")
    value = _lookup(row, col)
    if value not in (_MISSING, None, ""):
        if not isinstance(value, list):
            raise UserError(f"expected a list of choices, got {_json_type(value)}", field=col, **where)
        named = [(f"{col}[{i}]", v) for i, v in enumerate(value)]
    else:
        named = [(key, row[key]) for key in _choice_keys(row)]
        if not named:
            raise UserError("missing (expected a 'choices' list, fields choice0..choiceN, or fields A..D)",
                            field=col, **where)
    texts = [text_value(v, name, where) for name, v in named]
    while texts and not texts[-1]:  # items with fewer choices than the file has columns leave the tail empty
        texts.pop()
    for (name, _), text in zip(named, texts):
        if not text:
            raise UserError("empty choice (expected text; only trailing choices may be empty)", field=name, **where)
    if len(texts) < 2:
        raise UserError(f"{len(texts)} choice(s) (expected at least 2)", field=col, **where)
    return texts


def _answer(row: dict, fields: dict, choices: list, where: dict) -> int:
    col = fields.get("answer", "answer")
    value, k = _lookup(row, col), len(choices)
    expected = f"expected 0-{k - 1} or a letter A-{chr(64 + k)}"
    if value is _MISSING or value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{'missing' if value is _MISSING else 'empty'} ({expected})", field=col, **where)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        letter = _LETTER.fullmatch(text)
        if _INT.fullmatch(text):
            value = int(text)
        elif letter:
            index = ord(letter[1].upper()) - 65
            if index >= k:
                raise UserError(f"answer letter {letter[1].upper()!r} out of range for {k} choices ({expected})",
                                field=col, **where)
            return index
        elif text in choices:
            return choices.index(text)
        else:
            raise UserError(f"unknown answer {text!r} ({expected}, or the text of a choice)", field=col, **where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"expected an answer index or letter, got {_json_type(value)}", field=col, **where)
    if not 0 <= value < k:
        raise UserError(f"answer index {value} out of range for {k} choices ({expected})", field=col, **where)
    return value


def _label(row: dict, fields: dict, labels: list | None, where: dict) -> str:
    col = fields.get("label", "label")
    value = _lookup(row, col)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if labels is None and isinstance(value, int) and not isinstance(value, bool):
        raise UserError(f"label index {value} needs a label list (pass --labels NAME0,NAME1,...)",
                        field=col, **where)
    text = _get(row, "label", fields, where)
    if labels is None or text in labels:
        return text
    expected = f"one of: {', '.join(labels)}"
    if _INT.fullmatch(text):
        if 0 <= int(text) < len(labels):
            return labels[int(text)]
        raise UserError(f"label index {text} out of range for {len(labels)} labels (expected 0-{len(labels) - 1} "
                        f"or {expected})", field=col, **where)
    raise UserError(f"unknown label {text!r} (expected {expected}){_hint(text, labels)}", field=col, **where)


def _chat_column(row: dict, fields: dict) -> str:
    """The column holding the turns: the mapped one, else `messages` (OpenAI), else `conversations` (ShareGPT)."""
    if "messages" in fields:
        return fields["messages"]
    return "conversations" if "messages" not in row and "conversations" in row else "messages"


def _messages(row: dict, fields: dict, where: dict) -> list[dict]:
    """A conversation as OpenAI-style turns [{role, content}]: an optional system turn first, then user and assistant
    turns alternating from a user turn, at least one of them an assistant turn (the turns training learns)."""
    col = _chat_column(row, fields)
    turns = _lookup(row, col)
    if turns is _MISSING:
        raise UserError("missing (expected a list of turns: 'messages' [{role, content}, ...] or ShareGPT "
                        "'conversations' [{from, value}, ...])", field=col, **where)
    if not isinstance(turns, list) or not turns:
        got = "an empty list" if isinstance(turns, list) else _json_type(turns)
        raise UserError(f"expected a non-empty list of turns, got {got}", field=col, **where)
    messages = []
    for i, turn in enumerate(turns):
        name = f"{col}[{i}]"
        if not isinstance(turn, dict):
            raise UserError(f"expected a turn object, got {_json_type(turn)}", field=name, **where)
        sharegpt = "role" not in turn and "from" in turn
        role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
        speakers = SHAREGPT_ROLES if sharegpt else {role: role for role in ROLES}
        if role_key not in turn:
            raise UserError("missing (expected role/content or ShareGPT's from/value)", field=f"{name}.{role_key}",
                            **where)
        speaker = text_value(turn[role_key], f"{name}.{role_key}", where)
        if speaker not in speakers:
            raise UserError(f"unknown {role_key} {speaker!r} (expected one of: {', '.join(speakers)})"
                            f"{_hint(speaker, speakers)}", field=f"{name}.{role_key}", **where)
        content = text_value(turn.get(content_key), f"{name}.{content_key}", where)
        if not content:
            raise UserError(f"{'empty' if content_key in turn else 'missing'} (expected the turn's text)",
                            field=f"{name}.{content_key}", **where)
        messages.append({"role": speakers[speaker], "content": content})
    first = 1 if messages[0]["role"] == "system" else 0
    for i, message in enumerate(messages[first:], first):
        expected = "user" if (i - first) % 2 == 0 else "assistant"
        if message["role"] != expected:
            why = "a system turn comes first only" if message["role"] == "system" else \
                "user and assistant turns alternate, from a user turn"
            raise UserError(f"turn {i} is {message['role']!r}, expected {expected!r} ({why})",
                            field=f"{col}[{i}]", **where)
    if len(messages) - first < 2:
        raise UserError("no assistant turn (expected at least one user turn answered by the assistant)",
                        field=col, **where)
    return messages


def _normalize(kind: str, row: dict, fields: dict, labels: list | None, where: dict) -> dict:
    record = {"id": None}
    if kind == "chat":
        record["messages"] = _messages(row, fields, where)
    elif kind == "text":
        record["text"] = _get(row, "text", fields, where)
    elif kind == "instruction":
        record.update(instruction=_get(row, "instruction", fields, where),
                      input=_get(row, "input", fields, where, required=False),
                      output=_get(row, "output", fields, where))
    elif kind == "multiple_choice":
        question, choices = _get(row, "question", fields, where), _choices(row, fields, where)
        record.update(question=question, choices=choices, answer=_answer(row, fields, choices, where))
    else:
        record.update(text=_get(row, "text", fields, where),
                      context=_get(row, "context", fields, where, required=False),
                      label=_label(row, fields, labels, where))
    id_col = fields.get("id", "id")
    if _lookup(row, id_col) is not _MISSING:
        record["id"] = text_value(_lookup(row, id_col), id_col, where, integers=True)
        if not record["id"]:
            raise UserError("empty id (expected a unique value, or no id field at all)", field=id_col, **where)
    return record


def _table_records(path: Path, kind: str, fields: dict, labels, problems: list | None) -> list[dict]:
    ext, text = path.suffix.lower(), read_text(path)
    delimiter = TABLE_EXTS[ext]
    rows = _jsonl_rows(text, path) if delimiter is None else _csv_rows(text, path, delimiter, kind, fields)
    records, seen = [], {}
    for n, (line, row) in enumerate(rows, 1):
        where = {"path": path, "line": line}
        try:
            if isinstance(row, UserError):
                raise row
            record = _normalize(kind, row, fields, labels, where)
            record["id"] = record["id"] or f"{path.stem}-{n}"
            record.update(_other_columns(kind, row, fields, record))
            if record["id"] in seen:
                raise UserError(f"duplicate id {record['id']!r} (first on line {seen[record['id']]}; expected "
                                "unique ids)", field=fields.get("id", "id"), **where)
            seen[record["id"]] = line
            records.append(record)
        except UserError as err:
            if problems is None:
                raise
            problems.append(str(err))
    return records


def _other_columns(kind: str, row: dict, fields: dict, record: dict) -> dict:
    """The row's columns that no canonical field read (a `fail_mode` annotation, a source, ...): kept as they are,
    so a split file still carries them and a suite can break scores down by one (`group_by`)."""
    read = {fields.get(c, c).split(".")[0] for c in FIELDS[kind]}
    if kind == "chat":
        read.add(_chat_column(row, fields).split(".")[0])
    if kind == "multiple_choice":
        read.update(_choice_keys(row))
    return {k: v for k, v in row.items() if k not in read and k not in record}


def _text_records(path: Path, keep_code: bool, keep_markup: bool, problems: list | None) -> list[dict]:
    if path.is_dir():
        files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*")
                       if p.suffix.lower() in TEXT_EXTS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise UserError(f"no {' or '.join(TEXT_EXTS)} files in this folder", path=path)
    else:
        files = [(path.name, path)]
    records = []
    for name, file in files:
        try:
            text = read_text(file)
        except UserError as err:
            if problems is None:
                raise
            problems.append(str(err))
            continue
        found = paragraphs(text, file.suffix.lower() == ".md", keep_code, keep_markup)
        records += [{"id": f"{name}#{i}", "text": p} for i, p in enumerate(found, 1)]
    return records


# ---------------------------------------------------------------- public API

def _load(path, kind, fields, labels, keep_code, keep_markup, problems=None) -> list[dict]:
    """Records of `path`; with a `problems` list, record-level errors go there instead of being raised."""
    _check_kind(kind)
    fields, labels, path = _check_fields(kind, fields), _check_labels(labels), Path(path)
    if not path.exists():
        raise UserError("no such file or folder", path=path)
    ext = path.suffix.lower()
    if kind == "text" and (path.is_dir() or ext in TEXT_EXTS):
        records = _text_records(path, keep_code, keep_markup, problems)
    elif path.is_dir() or ext not in TABLE_EXTS or (kind == "chat" and ext != ".jsonl"):
        # a conversation is a list of turns, which no CSV cell holds
        supported = ", ".join((*TABLE_EXTS, *TEXT_EXTS, "a folder of them") if kind == "text" else
                              (".jsonl",) if kind == "chat" else TABLE_EXTS)
        what = "a folder" if path.is_dir() else f"file type {ext or '(none)'!r}"
        raise UserError(f"{what} is not supported for kind {kind} (supported: {supported})", path=path)
    else:
        records = _table_records(path, kind, fields, labels, problems)
    if not records and not problems:
        raise UserError("no records (the input is empty, or holds only a header, blank lines or markup)", path=path)
    return records


def holds_chat(path, fields: dict | None = None) -> bool:
    """Whether a file holds conversations: a JSONL file whose first record has `messages` or `conversations`, or
    any file once `fields` maps `messages` onto a column."""
    path = Path(path)
    if "messages" in (fields or {}):
        return True
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    first = next((row for _, row in _jsonl_rows(read_text(path), path)), None)
    return isinstance(first, dict) and ("messages" in first or "conversations" in first)


def read_records(path, kind: str, *, fields: dict | None = None, labels: list | None = None,
                 keep_code: bool = False, keep_markup: bool = False) -> list[dict]:
    """Normalized records of one file (or, for text, a folder of .md/.txt); raises UserError on the first problem."""
    return _load(path, kind, fields, labels, keep_code, keep_markup)


def record_text(record: dict, kind: str) -> str:
    """The text of a record that leakage is measured on."""
    if kind == "multiple_choice":
        parts = [record["question"], *record["choices"]]
    elif kind == "chat":
        parts = [message["content"] for message in record["messages"]]
    else:
        parts = [record[key] for key in {"instruction": ("instruction", "input", "output"),
                                         "classification": ("text", "context")}.get(kind, ("text",))]
    return "\n".join(part for part in parts if part)


def check_file(path, kind: str, *, fields: dict | None = None, labels: list | None = None) -> dict:
    """Every problem in a file at once, with counts and length/answer/label statistics."""
    _check_kind(kind)
    fields, labels, problems = _check_fields(kind, fields), _check_labels(labels), []
    try:
        records = _load(path, kind, fields, labels, False, False, problems)
    except UserError as err:  # the file as a whole could not be read
        records, problems = [], [str(err)]
    words = [len(record_text(r, kind).split()) for r in records]
    stats = {"words_mean": round(sum(words) / len(words), 1) if words else 0, "words_max": max(words, default=0),
             "duplicate_texts": len(records) - len({record_text(r, kind) for r in records})}
    if kind == "multiple_choice":
        stats["answers"] = dict(sorted(Counter(chr(65 + r["answer"]) for r in records).items()))
    elif kind == "classification":
        stats["labels"] = dict(Counter(r["label"] for r in records).most_common())
    elif kind == "instruction":
        stats["with_input"] = sum(1 for r in records if r["input"])
    elif kind == "chat":
        turns = [len(r["messages"]) for r in records]
        stats.update(turns_mean=round(sum(turns) / len(turns), 1) if turns else 0, turns_max=max(turns, default=0),
                     with_system=sum(1 for r in records if r["messages"][0]["role"] == "system"))
    return {"path": str(path), "kind": kind, "records": len(records), "problems": problems, "stats": stats}


def format_check_report(report: dict, max_problems: int = 50) -> str:
    stats = report["stats"]
    lines = [f"{report['path']} ({report['kind']}): records: {report['records']}, words per record: mean "
             f"{stats['words_mean']}, max {stats['words_max']}"]
    for key in ("answers", "labels"):
        if stats.get(key):
            lines.append(f"{key}: " + ", ".join(f"{k} {v}" for k, v in stats[key].items()))
    if stats.get("with_input") is not None:
        lines.append(f"with a non-empty input: {stats['with_input']}")
    if stats.get("turns_max") is not None:
        lines.append(f"turns per conversation: mean {stats['turns_mean']}, max {stats['turns_max']}; with a system "
                     f"turn: {stats['with_system']}")
    if stats["duplicate_texts"]:
        lines.append(f"duplicate texts: {stats['duplicate_texts']} (they can leak across a split)")
    problems = report["problems"]
    lines.append(f"{len(problems)} problem(s):" if problems else "no problems found")
    lines += [f"  {p}" for p in problems[:max_problems]]
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (--json lists all)")
    return "\n".join(lines)
