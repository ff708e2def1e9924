"""The results store: evaluations, models, scores and per-sample records in one SQLite file, with exports in the
formats others read (lm-eval's output folder, predictions CSV, tables for pandas) and the plain-text views behind
`adapterbench runs`."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import secrets
import sqlite3
import stat
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from adapterbench import paths
from adapterbench.atomic import atomic_file
from adapterbench.errors import UserError
from adapterbench import terminal

SCHEMA_VERSION = 3

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS evaluations (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        suite_name TEXT NOT NULL,
        suite_path TEXT,
        base_ref TEXT NOT NULL,
        config_json TEXT NOT NULL,
        command TEXT NOT NULL,
        environment_json TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'eval',
        train_run TEXT,
        step INTEGER,
        tokens_seen INTEGER)""",
    "CREATE INDEX IF NOT EXISTS evaluations_kind_created ON evaluations(kind, created_at)",
    """CREATE TABLE IF NOT EXISTS models (
        evaluation_id TEXT NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('base', 'adapter')),
        path TEXT,
        sha256 TEXT,
        base_name TEXT,
        manifest_json TEXT,
        lm_eval_json TEXT,
        PRIMARY KEY (evaluation_id, label))""",
    "CREATE INDEX IF NOT EXISTS models_label ON models(label)",
    """CREATE TABLE IF NOT EXISTS scores (
        evaluation_id TEXT NOT NULL,
        label TEXT NOT NULL,
        task TEXT NOT NULL,
        metric TEXT NOT NULL,
        value REAL,
        stderr REAL,
        n INTEGER,
        PRIMARY KEY (evaluation_id, label, task, metric),
        FOREIGN KEY (evaluation_id, label) REFERENCES models(evaluation_id, label) ON DELETE CASCADE)""",
    """CREATE TABLE IF NOT EXISTS samples (
        evaluation_id TEXT NOT NULL,
        label TEXT NOT NULL,
        task TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        doc_hash TEXT,
        prompt TEXT,
        prediction TEXT,
        reference TEXT,
        metrics_json TEXT NOT NULL,
        group_name TEXT,
        cluster_name TEXT,
        PRIMARY KEY (evaluation_id, label, task, doc_id),
        FOREIGN KEY (evaluation_id, label) REFERENCES models(evaluation_id, label) ON DELETE CASCADE)""",
    "CREATE INDEX IF NOT EXISTS samples_item ON samples(evaluation_id, task, doc_id)",
)
# Steps from each older version to the next; a store is upgraded in the transaction that opens it.
_MIGRATIONS = {
    1: ("ALTER TABLE samples ADD COLUMN group_name TEXT",),  # v2: a task's group_by value per sample
    2: ("ALTER TABLE samples ADD COLUMN cluster_name TEXT",),  # v3: a task's cluster_by value per sample
}


def default_store_path() -> Path:
    return Path(os.environ.get("ADAPTERBENCH_STORE") or "adapterbench.sqlite")


SQLITE_HEADER = b"SQLite format 3\x00"


def inspect_store(path: str | Path) -> int | None:
    """The schema version of the store at `path` (None: no store there yet, or an empty file), looked at read-only:
    a folder, a FIFO, a file that is not SQLite, an SQLite file of another program or of a newer adapterbench, and
    a damaged one (SQLite's quick_check, once per file state: a damaged page otherwise reads as "no rows") are
    refused (UserError) before anything could change them."""
    path = Path(path)
    info = paths.stat_or_none(path, "--store")
    if info is None:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise UserError("is a folder (expected the store's SQLite file, e.g. adapterbench.sqlite)", path=path,
                        field="--store")
    path = paths.input_file(path, "store file", field="--store")
    if info.st_size == 0:
        return None
    with open(path, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise UserError("not a usable adapterbench store: not an SQLite file (use another --store)", path=path,
                            field="--store")
    try:
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "schema_version" not in tables:
                raise UserError("not a usable adapterbench store: an SQLite file of another program (tables: "
                                f"{', '.join(sorted(tables)[:5])}), left untouched (use another --store)", path=path,
                                field="--store")
            found = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] if tables else None
            _check_intact(conn, path)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"not a usable adapterbench store ({exc})", path=path, field="--store") from None
    if found is not None and found > SCHEMA_VERSION:
        raise UserError(f"the store has schema version {found}, newer than this adapterbench knows "
                        f"({SCHEMA_VERSION}); upgrade adapterbench or use another store", path=path, field="--store")
    return found


def check_store(path: str | Path | None = None) -> Path:
    """What a command that will write results checks before any work: the store (or the place it will be created)
    is writable, is ours and is intact, so minutes of scoring are never lost at the end."""
    path = Path(path) if path is not None else default_store_path()
    if str(path) == ":memory:":
        return path
    inspect_store(path)
    paths.output_file(path, field="--store")  # its folder too: SQLite writes -wal and -shm files beside it
    return path


_INTACT: set[tuple] = set()  # (path, size, mtime) of the store and its WAL file that passed quick_check


def _check_intact(conn: sqlite3.Connection, path: Path) -> None:
    state = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in (path, Path(f"{path}-wal")) if p.exists())
    if state in _INTACT:
        return
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]  # reads every page once: ~0.15 s per 140 MB
    if problems != ["ok"]:
        first = next(line for line in "\n".join(problems).splitlines() if not line.startswith("***"))
        raise UserError(f"the store is damaged ({first[:120]}); restore a copy or use another --store", path=path,
                        field="--store")
    _INTACT.add(state)


def connect(path: str | Path | None = None, *, create: bool = True) -> sqlite3.Connection:
    """Open the store, creating it if needed (create=False, for commands that only read: a missing store is an
    error, not a new empty file); refuses, leaving it untouched, a store written by a newer schema and any file that
    is not an adapterbench store."""
    path = Path(path) if path is not None else default_store_path()
    if str(path) != ":memory:":
        if inspect_store(path) is None and not create and not path.exists():
            raise UserError("no store here: nothing was evaluated into it yet (check --store and "
                            "$ADAPTERBENCH_STORE)", path=path, field="--store")
        paths.output_dir(path.parent, field="--store")
        path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are ours (BEGIN IMMEDIATE), not the sqlite3 module's implicit ones. The timeout
    # lets a training run and an `eval` write the same store without "database is locked".
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_mode = WAL")
        with _transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
            found = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            if found is not None and found > SCHEMA_VERSION:
                raise UserError(f"the store has schema version {found}, newer than this adapterbench knows "
                                f"({SCHEMA_VERSION}); upgrade adapterbench or use another store", path=path)
            for version in range(found or SCHEMA_VERSION, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version + 1, _now()))
            for statement in _SCHEMA:
                conn.execute(statement)
            if found is None:
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (SCHEMA_VERSION, _now()))
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise UserError(f"not a usable adapterbench store ({exc})", path=path) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _store_errors(fn):
    """Damage SQLite finds only when it reads a page, a full disk, a lock held too long: one line naming the store,
    not a traceback. Integrity and programming errors are bugs and pass through."""
    @functools.wraps(fn)
    def wrapper(conn: sqlite3.Connection, *args, **kwargs):
        try:
            return fn(conn, *args, **kwargs)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:
            raise UserError(f"the store cannot be used ({exc})", path=_db_path(conn), field="--store") from None
    return wrapper


def new_evaluation_id() -> str:
    """`ev-YYYYMMDD-HHMMSS-` and 16 hex digits: UTC time first so ids sort by age; 64 random bits keep them apart
    (16 bits collided in 2 % of 50 ids made in one second)."""
    return f"ev-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(8)}"


def forget_train_steps(conn: sqlite3.Connection, train_run: str, *, after_step: int) -> int:
    """Delete the curve points (kind 'train_step') of the run `train_run` after `after_step`, with their models,
    scores and samples: a resumed run evaluates those steps again. Returns how many were deleted."""
    with _transaction(conn):
        return conn.execute("DELETE FROM evaluations WHERE kind = 'train_step' AND train_run = ? AND step > ?",
                            (train_run, after_step)).rowcount


@_store_errors
def save_evaluation(conn: sqlite3.Connection, evaluation: dict) -> str:
    """Write one evaluation (models, scores, samples) in one transaction: all rows or none. Returns its id."""
    models = evaluation["models"]
    labels = [m["label"] for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate model labels in {labels}")
    for model in models:
        if model["role"] not in ("base", "adapter"):
            raise ValueError(f"model '{model['label']}': role must be 'base' or 'adapter', not {model['role']!r}")
    for what in ("scores", "samples"):
        for row in evaluation.get(what, ()):
            if row["label"] not in labels:
                raise ValueError(f"{what}: label '{row['label']}' is not one of the models {labels}")

    eval_id = evaluation.get("id") or new_evaluation_id()
    suite = evaluation["suite"]
    # Rows are built lazily inside the transaction, so a bad row (e.g. metrics that are not JSON) fails midway and
    # the rollback, not up-front validation, is what keeps the store whole. Descriptive JSON (config, environment,
    # manifest) falls back to str() so a stray Path cannot lose a finished run; metrics stay strict, since a number
    # silently turned into text would corrupt the statistics.
    with _transaction(conn):
        conn.execute(
            "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (eval_id, evaluation.get("created_at") or _now(), suite["name"], _str_or_none(suite.get("path")),
             evaluation["base_ref"], _json(evaluation.get("config") or {}), evaluation.get("command") or "",
             _json(evaluation.get("environment") or {}), evaluation.get("kind") or "eval",
             evaluation.get("train_run"), evaluation.get("step"), evaluation.get("tokens_seen")))
        conn.executemany(
            "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((eval_id, m["label"], m["role"], _str_or_none(m.get("path")), m.get("sha256"), m.get("base_name"),
              _json(m.get("manifest")), _json(m.get("lm_eval"), default=_lm_eval_default))
             for m in models))
        conn.executemany(
            "INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((eval_id, s["label"], s["task"], s["metric"], s["value"], _stderr(s.get("stderr")), s.get("n"))
             for s in evaluation.get("scores", ())))
        conn.executemany(
            "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((eval_id, s["label"], s["task"], str(s["doc_id"]), s.get("doc_hash"), s.get("prompt"),
              s.get("prediction"), s.get("reference"), json.dumps(s.get("metrics") or {}, ensure_ascii=False),
              s.get("group"), s.get("cluster"))
             for s in evaluation.get("samples", ())))
    return eval_id


@_store_errors
def list_evaluations(conn: sqlite3.Connection, kind: str | None = "eval", limit: int | None = None) -> list[dict]:
    """Newest first: id, created_at, kind, suite_name, base_ref, models (labels in order), n_tasks. kind=None: all."""
    rows = conn.execute(
        "SELECT e.id, e.created_at, e.kind, e.suite_name, e.base_ref,"
        " (SELECT count(DISTINCT task) FROM scores s WHERE s.evaluation_id = e.id) AS n_tasks"
        " FROM evaluations e WHERE ? IS NULL OR e.kind = ? ORDER BY e.created_at DESC, e.rowid DESC LIMIT ?",
        (kind, kind, -1 if limit is None else limit)).fetchall()
    labels: dict[str, list[str]] = {}
    for eval_id, label in conn.execute("SELECT evaluation_id, label FROM models ORDER BY rowid"):
        labels.setdefault(eval_id, []).append(label)
    return [{**dict(r), "models": labels.get(r["id"], [])} for r in rows]


@_store_errors
def load_evaluation(conn: sqlite3.Connection, evaluation_id: str, *, with_samples: bool = True) -> dict:
    """The evaluation in the shape `save_evaluation` takes (plus id and created_at). Accepts a full id, a unique
    prefix, or `latest` (the newest of kind 'eval'). with_samples=False leaves "samples" empty (faster to show)."""
    eval_id = _resolve_id(conn, evaluation_id)
    e = conn.execute("SELECT * FROM evaluations WHERE id = ?", (eval_id,)).fetchone()
    # One evaluation's rows are inserted in one transaction in the caller's order, so rowid order is saved order.
    models = [{"label": m["label"], "role": m["role"], "path": m["path"], "sha256": m["sha256"],
               "base_name": m["base_name"], "manifest": _loads(m["manifest_json"]),
               "lm_eval": _loads(m["lm_eval_json"])}
              for m in conn.execute("SELECT * FROM models WHERE evaluation_id = ? ORDER BY rowid", (eval_id,))]
    # SQLite stores NaN as NULL; a score always has a value, so NULL can only have been NaN.
    scores = [{"label": s["label"], "task": s["task"], "metric": s["metric"],
               "value": math.nan if s["value"] is None else s["value"], "stderr": s["stderr"], "n": s["n"]}
              for s in conn.execute("SELECT * FROM scores WHERE evaluation_id = ? ORDER BY rowid", (eval_id,))]
    samples = [] if not with_samples else [
        {"label": s["label"], "task": s["task"], "doc_id": s["doc_id"], "doc_hash": s["doc_hash"],
         "prompt": s["prompt"], "prediction": s["prediction"], "reference": s["reference"],
         "metrics": json.loads(s["metrics_json"]), "group": s["group_name"], "cluster": s["cluster_name"]}
        for s in conn.execute("SELECT * FROM samples WHERE evaluation_id = ? ORDER BY rowid", (eval_id,))]
    return {"id": e["id"], "created_at": e["created_at"], "suite": {"name": e["suite_name"], "path": e["suite_path"]},
            "base_ref": e["base_ref"], "config": json.loads(e["config_json"]), "command": e["command"],
            "environment": json.loads(e["environment_json"]), "kind": e["kind"], "train_run": e["train_run"],
            "step": e["step"], "tokens_seen": e["tokens_seen"], "models": models, "scores": scores,
            "samples": samples}


@_store_errors
def resolve_model_ref(conn: sqlite3.Connection, ref: str) -> tuple[str, str]:
    """`EVAL_ID:LABEL` (id may be a prefix or `latest`) or a bare `LABEL` (its newest 'eval' evaluation)."""
    if ":" in ref:
        eval_ref, label = ref.split(":", 1)
        eval_id = _resolve_id(conn, eval_ref)
        labels = [r[0] for r in conn.execute("SELECT label FROM models WHERE evaluation_id = ? ORDER BY rowid",
                                             (eval_id,))]
        if label not in labels:
            raise UserError(f"evaluation {eval_id} has no model '{label}'; its models: {', '.join(labels)}",
                            path=_db_path(conn), field="model")
        return eval_id, label
    row = conn.execute("SELECT e.id FROM evaluations e JOIN models m ON m.evaluation_id = e.id"
                       " WHERE m.label = ? AND e.kind = 'eval' ORDER BY e.created_at DESC, e.rowid DESC LIMIT 1",
                       (ref,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT DISTINCT m.label FROM models m JOIN evaluations e"
                                            " ON m.evaluation_id = e.id WHERE e.kind = 'eval' ORDER BY m.label")]
        hint = f"; labels in the store: {', '.join(known)}" if known else "; the store has no evaluations yet"
        raise UserError(f"no evaluation has a model labelled '{ref}'{hint}", path=_db_path(conn), field="model")
    return row[0], ref


def scores_table(evaluation: dict) -> list[dict]:
    """Score rows (label, task, metric, value, stderr, n) by task, metric, then model order (base first)."""
    order = {m["label"]: i for i, m in enumerate(evaluation["models"])}
    rows = sorted(evaluation["scores"], key=lambda s: (s["task"], s["metric"], order[s["label"]]))
    return [{k: s.get(k) for k in ("label", "task", "metric", "value", "stderr", "n")} for s in rows]


def export_lm_eval(evaluation: dict, label: str) -> dict:
    """lm-eval's results JSON for one model, plus our identity of it under "adapterbench" (HFLM records only the
    base's name). Built from the scores in lm-eval's shape when lm-eval's own dict was not kept."""
    model = _model(evaluation, label)
    if model["lm_eval"] is not None:
        out = dict(model["lm_eval"])
    else:
        results: dict[str, dict] = {}
        n_samples: dict[str, dict] = {}
        for s in evaluation["scores"]:
            if s["label"] != label:
                continue
            name, _, filt = s["metric"].partition(",")
            filt = filt or "none"
            entry = results.setdefault(s["task"], {"alias": s["task"]})
            entry[f"{name},{filt}"] = s["value"]
            # lm-eval writes "N/A" where it has no standard error.
            entry[f"{name}_stderr,{filt}"] = "N/A" if s.get("stderr") is None else s["stderr"]
            if s.get("n") is not None:
                n_samples[s["task"]] = {"original": s["n"], "effective": s["n"]}
        out = {"results": results, "n-samples": n_samples}
    out["adapterbench"] = {"evaluation_id": evaluation["id"], "label": label, "role": model["role"],
                           "path": model["path"], "sha256": model["sha256"], "base_name": model["base_name"],
                           "manifest": model["manifest"]}
    return out


def write_lm_eval_dir(evaluation: dict, folder: str | Path) -> None:
    """lm-eval's own output layout, so its tools and Zeno-style viewers read the evaluation: per model a folder
    named as lm-eval names one, holding results_DATE.json (export_lm_eval) and, while the evaluation still carries
    lm-eval's per-sample log (a fresh `eval`: the store does not keep it), samples_TASK_DATE.jsonl per task, each
    line as `lm_eval --log_samples` writes it (its EvaluationTracker.save_results_samples, 0.4.13)."""
    from lm_eval.utils import handle_non_serializable, sanitize_list, sanitize_model_name

    # lm-eval's date_id (its local time; ours the evaluation's, in UTC): tools pick the newest file by it
    date = datetime.fromisoformat(evaluation["created_at"]).replace(tzinfo=None).isoformat().replace(":", "-")
    for model in evaluation["models"]:
        model_dir = Path(folder) / sanitize_model_name(model["label"])
        with atomic_file(model_dir / f"results_{date}.json") as f:
            f.write(json.dumps(export_lm_eval(evaluation, model["label"]), indent=2, default=handle_non_serializable,
                               ensure_ascii=False))
        for task, logged in (model.get("lm_eval_samples") or {}).items():
            with atomic_file(model_dir / f"samples_{task}_{date}.jsonl") as f:
                for sample in logged:
                    # arguments keyed and responses as text, as lm-eval writes them so that `datasets` loads the file
                    line = {**sample, "arguments": {f"gen_args_{i}": {f"arg_{j}": arg for j, arg in enumerate(args)}
                                                    for i, args in enumerate(sample["arguments"])},
                            "resps": sanitize_list(sample["resps"]),
                            "filtered_resps": sanitize_list(sample["filtered_resps"]), "target": str(sample["target"])}
                    f.write(json.dumps(line, default=handle_non_serializable, ensure_ascii=False) + "\n")


EXPORT_FORMATS = ("csv", "jsonl", "parquet")
# the columns of each `runs export` table; a samples row adds its per-sample metrics
EXPORT_COLUMNS = {"samples": ("evaluation_id", "label", "task", "doc_id", "doc_hash", "prompt", "prediction",
                              "reference", "group", "cluster"),
                  "scores": ("evaluation_id", "label", "role", "task", "metric", "value", "stderr", "n")}


def check_export(table: str, fmt: str, path: str | Path) -> None:
    """`runs export`'s choices and destination, checked before the store is read."""
    import importlib.util

    if table not in EXPORT_COLUMNS:
        raise UserError(f"unknown table {table!r}; choose {' or '.join(EXPORT_COLUMNS)}", field="--table")
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}", field="--format")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UserError("parquet needs pyarrow, which is not installed: pip install pyarrow", field="--format")
    paths.output_file(path, field="--out")


def export_rows(evaluation: dict, table: str) -> list[dict]:
    """The rows of `runs export`, each naming its evaluation (exports of several evaluations concatenate): scores,
    one per model x task x metric; samples, one per model x task x item with its per-sample metrics (a dict)."""
    roles = {m["label"]: m["role"] for m in evaluation["models"]}
    items = scores_table(evaluation) if table == "scores" else evaluation["samples"]
    rows = []
    for item in items:
        row = {k: item.get(k) for k in EXPORT_COLUMNS[table]}
        row["evaluation_id"] = evaluation["id"]
        if table == "scores":
            row["role"] = roles[item["label"]]
        else:
            row["metrics"] = item["metrics"]
        rows.append(row)
    return rows


def write_export(evaluation: dict, table: str, fmt: str, path: str | Path) -> int:
    """`export_rows` as JSONL (metrics nested), CSV or Parquet (a `metrics.NAME` column per metric, items that are
    not numbers as JSON text; CSV text cells escaped as in write_predictions_csv). Returns the row count."""
    rows = export_rows(evaluation, table)
    if fmt == "jsonl":
        with atomic_file(path) as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return len(rows)
    import pandas as pd

    flat = [{**{k: v for k, v in row.items() if k != "metrics"},
             **{f"metrics.{name}": value if isinstance(value, (int, float)) or value is None else json.dumps(value)
                for name, value in row.get("metrics", {}).items()}} for row in rows]
    if fmt == "csv":
        flat = [{k: _csv_cell(v) if isinstance(v, str) else v for k, v in row.items()} for row in flat]
    columns = list(dict.fromkeys([*EXPORT_COLUMNS[table], *(k for row in flat for k in row)]))
    frame = pd.DataFrame(flat, columns=columns)
    with atomic_file(path, newline="", binary=fmt == "parquet") as f:
        if fmt == "csv":
            frame.to_csv(f, index=False)
        else:
            frame.to_parquet(f, index=False)
    return len(rows)


def write_predictions_csv(evaluation: dict, path: str | Path) -> Path:
    """One row per (task, doc_id) in first-seen order: task, id, input, reference, the item's group (only when a
    task has group_by), then one prediction column per model in model order; input, reference and group come from
    the first model (in that order) that has the item."""
    path = Path(path)
    labels = [m["label"] for m in evaluation["models"]]
    items: dict[tuple[str, str], dict[str, dict]] = {}
    for s in evaluation["samples"]:
        items.setdefault((s["task"], str(s["doc_id"])), {})[s["label"]] = s
    grouped = any(s.get("group") is not None for s in evaluation["samples"])
    with atomic_file(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(map(_csv_cell, ["task", "id", "input", "reference", *(["group"] if grouped else []), *labels]))
        for (task, doc_id), by_label in items.items():
            first = next(by_label[label] for label in labels if label in by_label)
            writer.writerow(map(_csv_cell, [task, doc_id, first.get("prompt"), first.get("reference"),
                                            *([first.get("group")] if grouped else []),
                                            *(by_label.get(label, {}).get("prediction") for label in labels)]))
    return path


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value) -> str:
    """A cell a spreadsheet shows as text: model answers and data are untrusted, and Excel or LibreOffice would run
    a cell such as =HYPERLINK(...), so one that starts like a formula gets a leading ' (OWASP's advice)."""
    text = _text(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def format_evaluation(evaluation: dict) -> str:
    """Header (id, date, suite, base, models with short sha) and a task x metric table, one column per model."""
    e = evaluation
    suite = e["suite"]["name"] + (f"  ({e['suite']['path']})" if e["suite"].get("path") else "")
    lines = [f"evaluation  {e['id']}" + (f"  ({e['kind']})" if e.get("kind", "eval") != "eval" else ""),
             f"date        {_date(e['created_at'])}", f"suite       {suite}", f"base        {e['base_ref']}"]
    if e.get("train_run") is not None:
        lines.append(f"train run   {e['train_run']}  step {e.get('step')}  tokens {e.get('tokens_seen')}")
    model_rows = [[m["label"], m["role"], (m.get("sha256") or "-")[:12], m.get("path") or ""] for m in e["models"]]
    for i, line in enumerate(terminal.align(model_rows)):
        lines.append(("models      " if i == 0 else " " * 12) + line)
    labels = [m["label"] for m in e["models"]]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for s in scores_table(e):
        cells.setdefault((s["task"], s["metric"]), {})[s["label"]] = _score(s["value"], s["stderr"])
    if cells:
        table = [["task", "metric", *labels]]
        table += [[task, metric, *(row.get(label, "-") for label in labels)] for (task, metric), row in cells.items()]
        lines += ["", *terminal.table(table, right=range(2, 2 + len(labels)))]
    else:
        lines += ["", "(no scores)"]
    groups = _group_rows(e, labels)
    if groups:
        lines += ["", "by group (each task's primary metric)", *terminal.table(groups, right=range(2, 4 + len(labels)))]
    return "\n".join(lines)


def _group_rows(evaluation: dict, labels: list[str]) -> list[list[str]]:
    """For tasks with a group_by column: the primary metric per group and model, aggregated as the task aggregates
    it (corpus BLEU, macro F1...), with the group's item count."""
    from adapterbench.harness.compare import group_scores, primary_metric

    by_task: dict[str, dict[str, list[dict]]] = {}
    for s in evaluation["samples"]:
        if s.get("group") is not None:
            by_task.setdefault(s["task"], {}).setdefault(s["label"], []).append(s)
    rows = []
    for task, by_label in by_task.items():
        sampled = {m for samples in by_label.values() for s in samples for m in s["metrics"]}
        scored = [r["metric"] for r in evaluation["scores"] if r["task"] == task and r["metric"] in sampled]
        if not scored:
            continue
        metric = primary_metric(scored)
        for row in sorted(group_scores(by_label, [metric]), key=lambda r: r["group"]):
            rows.append([task, row["group"], str(row["n"]), metric,
                         *(_score(row["values"].get(label, {}).get(metric), None) for label in labels)])
    return [["task", "group", "n", "metric", *labels], *rows] if rows else []


def format_evaluation_list(rows: list[dict]) -> str:
    """The `runs list` table: id, date, suite, base, models, tasks (and kind when rows of several kinds are listed)."""
    if not rows:
        return "no evaluations in the store"
    kinds = any(r.get("kind", "eval") != "eval" for r in rows)  # a kind column only when the list mixes kinds
    table = [["id", "date", "suite", "base", "models", "tasks", *(["kind"] if kinds else [])]]
    table += [[r["id"], _date(r["created_at"]), r["suite_name"], r["base_ref"], ", ".join(r["models"]),
               str(r["n_tasks"]), *([r.get("kind", "eval")] if kinds else [])] for r in rows]
    return "\n".join(terminal.table(table, right={5}))


# --- helpers -----------------------------------------------------------------------------------------------------

@contextmanager
def _transaction(conn: sqlite3.Connection):
    # IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout instead of one failing late.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _resolve_id(conn: sqlite3.Connection, ref: str) -> str:
    if ref == "latest":
        row = conn.execute("SELECT id FROM evaluations WHERE kind = 'eval'"
                           " ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        if row is None:
            raise UserError("the store has no evaluations yet", path=_db_path(conn), field="evaluation")
        return row[0]
    matches = [r[0] for r in conn.execute("SELECT id FROM evaluations WHERE substr(id, 1, ?) = ?"
                                          " ORDER BY created_at DESC, rowid DESC", (len(ref), ref))] if ref else []
    if ref in matches:
        return ref
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"'{ref}' matches {len(matches)} evaluations ({', '.join(matches[:5])}"
                        f"{', ...' if len(matches) > 5 else ''}); give more of the id",
                        path=_db_path(conn), field="evaluation")
    recent = [r["id"] for r in list_evaluations(conn, kind=None, limit=5)]
    hint = f"; recent: {', '.join(recent)}" if recent else "; the store has no evaluations yet"
    raise UserError(f"no evaluation '{ref}' in the store{hint}", path=_db_path(conn), field="evaluation")


def _db_path(conn: sqlite3.Connection) -> str | None:
    # Errors name the store file: $ADAPTERBENCH_STORE may point somewhere the user did not expect.
    return conn.execute("PRAGMA database_list").fetchone()[2] or None


def _model(evaluation: dict, label: str) -> dict:
    for model in evaluation["models"]:
        if model["label"] == label:
            return model
    raise UserError(f"evaluation {evaluation['id']} has no model '{label}'; its models: "
                    f"{', '.join(m['label'] for m in evaluation['models'])}", field="model")


def _lm_eval_default(obj):
    # What lm-eval's CLI does when writing results_*.json (utils.handle_non_serializable): numpy ints and sets
    # become JSON, anything else its str(), so any dict its CLI can write, we can keep.
    if isinstance(obj, set):
        return list(obj)
    try:
        return obj.item()  # numpy / torch scalars
    except (AttributeError, TypeError, ValueError):
        return str(obj)


def _json(value, default=str) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=default)


def _loads(text: str | None):
    return None if text is None else json.loads(text)


def _stderr(value) -> float | None:
    # lm-eval reports a missing standard error as "N/A" (or NaN); the store keeps it as NULL.
    if value is None or isinstance(value, str) or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _str_or_none(value) -> str | None:
    return None if value is None else str(value)


def _text(value) -> str:
    return "" if value is None else str(value)


def _now() -> str:
    # Microseconds keep created_at ordering exact for evaluations saved within the same second (training steps).
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _date(created_at: str) -> str:
    try:
        return f"{datetime.fromisoformat(created_at).astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    except (TypeError, ValueError):
        return str(created_at)


def _score(value, stderr) -> str:
    if value is None:
        return "-"
    text = f"{value:.4f}"
    return text if stderr is None else f"{text} ± {stderr:.4f}"
