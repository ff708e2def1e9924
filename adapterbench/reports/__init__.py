"""Comparison reports (HTML, LaTeX, Markdown) from evaluations in the store and training run dirs: `make_report`
gathers (context.py), draws (plots.py) and renders (render.py, templates/)."""

from __future__ import annotations

from pathlib import Path

FORMATS = ("html", "latex", "md")


def make_report(out: str | Path, *, eval_refs=(), train_runs=(), formats=FORMATS, store=None,
                reference: str | None = None, max_answers: int = 10, command: str | None = None) -> list[Path]:
    """Load the evaluations (ids, unique prefixes or 'latest') and run dirs, render every format, write them into
    `out`. Returns the paths written."""
    from adapterbench import paths
    from adapterbench.errors import UserError
    from adapterbench.harness import database
    from adapterbench.reports.context import build_context
    from adapterbench.reports.render import parse_formats, write_report

    if not eval_refs and not train_runs:
        raise UserError("nothing to report: give --eval ID (repeatable), --latest, or --train-run DIR")
    formats = parse_formats(formats)
    paths.output_dir(out, field="--out")  # before the evaluations are read and rendered
    evaluations: dict[str, dict] = {}
    if eval_refs:
        with database.connect(store, create=False) as conn:
            for ref in eval_refs:
                evaluation = database.load_evaluation(conn, ref)
                evaluations.setdefault(evaluation["id"], evaluation)  # 'latest' and its own id are one evaluation
    context = build_context(list(evaluations.values()), train_runs, reference=reference, max_answers=max_answers,
                            command=command)
    return write_report(context, out, formats)
