"""The results store in SQLite: evaluations with their models, scores and per-sample records, each written in one
transaction, found again by id, unique prefix, `latest` or model label."""

from __future__ import annotations

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
from adapterbench.errors import UserError
from adapterbench.record_types import Evaluation, EvaluationSummary, ModelEntry, Sample, Score, SuiteRef

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
def save_evaluation(conn: sqlite3.Connection, evaluation: Evaluation) -> str:
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
def list_evaluations(conn: sqlite3.Connection, kind: str | None = "eval",
                     limit: int | None = None) -> list[EvaluationSummary]:
    """Newest first: id, created_at, kind, suite_name, base_ref, models (labels in order), n_tasks. kind=None: all."""
    rows = conn.execute(
        "SELECT e.id, e.created_at, e.kind, e.suite_name, e.base_ref,"
        " (SELECT count(DISTINCT task) FROM scores s WHERE s.evaluation_id = e.id) AS n_tasks"
        " FROM evaluations e WHERE ? IS NULL OR e.kind = ? ORDER BY e.created_at DESC, e.rowid DESC LIMIT ?",
        (kind, kind, -1 if limit is None else limit)).fetchall()
    labels: dict[str, list[str]] = {}
    for eval_id, label in conn.execute("SELECT evaluation_id, label FROM models ORDER BY rowid"):
        labels.setdefault(eval_id, []).append(label)
    return [EvaluationSummary(**dict(r), models=labels.get(r["id"], [])) for r in rows]


@_store_errors
def load_evaluation(conn: sqlite3.Connection, evaluation_id: str, *, with_samples: bool = True) -> Evaluation:
    """The evaluation in the shape `save_evaluation` takes (plus id and created_at). Accepts a full id, a unique
    prefix, or `latest` (the newest of kind 'eval'). with_samples=False leaves "samples" empty (faster to show)."""
    eval_id = _resolve_id(conn, evaluation_id)
    e = conn.execute("SELECT * FROM evaluations WHERE id = ?", (eval_id,)).fetchone()
    # One evaluation's rows are inserted in one transaction in the caller's order, so rowid order is saved order.
    models = [ModelEntry(label=m["label"], role=m["role"], path=m["path"], sha256=m["sha256"],
                         base_name=m["base_name"], manifest=_loads(m["manifest_json"]),
                         lm_eval=_loads(m["lm_eval_json"]))
              for m in conn.execute("SELECT * FROM models WHERE evaluation_id = ? ORDER BY rowid", (eval_id,))]
    # SQLite stores NaN as NULL; a score always has a value, so NULL can only have been NaN.
    scores = [Score(label=s["label"], task=s["task"], metric=s["metric"],
                    value=math.nan if s["value"] is None else s["value"], stderr=s["stderr"], n=s["n"])
              for s in conn.execute("SELECT * FROM scores WHERE evaluation_id = ? ORDER BY rowid", (eval_id,))]
    samples = [] if not with_samples else [
        Sample(label=s["label"], task=s["task"], doc_id=s["doc_id"], doc_hash=s["doc_hash"], prompt=s["prompt"],
               prediction=s["prediction"], reference=s["reference"], metrics=json.loads(s["metrics_json"]),
               group=s["group_name"], cluster=s["cluster_name"])
        for s in conn.execute("SELECT * FROM samples WHERE evaluation_id = ? ORDER BY rowid", (eval_id,))]
    return Evaluation(id=e["id"], created_at=e["created_at"],
                      suite=SuiteRef(name=e["suite_name"], path=e["suite_path"]), base_ref=e["base_ref"],
                      config=json.loads(e["config_json"]), command=e["command"],
                      environment=json.loads(e["environment_json"]), kind=e["kind"], train_run=e["train_run"],
                      step=e["step"], tokens_seen=e["tokens_seen"], models=models, scores=scores, samples=samples)


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


def _now() -> str:
    # Microseconds keep created_at ordering exact for evaluations saved within the same second (training steps).
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
