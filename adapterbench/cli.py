"""The `adapterbench` command line: parse, call the Python API, print. Heavy imports live inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from adapterbench.errors import UserError

app = typer.Typer(
    help="Score, train and regression-check LoRA/QLoRA adapters on your own domain data.\n\n"
    "Typical flow: data split -> train -> eval -> report -> gate. Every command has its own --help.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
data_app = typer.Typer(help="Check and split domain data files (text, instruction, multiple_choice, classification).",
                       no_args_is_help=True)
models_app = typer.Typer(help="Resolve and inspect base models (the embedded default, HF dirs, GGUF files).",
                         no_args_is_help=True)
tasks_app = typer.Typer(help="Compile a suite.yaml into lm-eval task YAML and list its tasks.", no_args_is_help=True)
runs_app = typer.Typer(help="List and show evaluations kept in the store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(tasks_app, name="tasks")
app.add_typer(runs_app, name="runs")


def _parse_fields(fields: List[str]) -> dict:
    mapping = {}
    for item in fields:
        canonical, sep, column = item.partition("=")
        if not sep or not canonical or not column:
            raise UserError(f"--field expects CANONICAL=COLUMN (e.g. output=completion), got {item!r}")
        mapping[canonical] = column
    return mapping


def _parse_csv_list(value: Optional[str]) -> Optional[list]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


KIND_HELP = "text | instruction | multiple_choice | classification"
FIELD_HELP = "Map a field to your column name, CANONICAL=COLUMN (repeatable), e.g. --field output=completion."


@data_app.command("check")
def data_check(
    file: Path = typer.Argument(..., help="A .jsonl/.csv file, or for text a .txt/.md file or folder."),
    kind: str = typer.Option(..., "--kind", "-k", help=KIND_HELP),
    field: List[str] = typer.Option([], "--field", help=FIELD_HELP),
    labels: Optional[str] = typer.Option(None, help="Classification label list, comma-separated (order = index)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Validate a data file: counts, length statistics and every problem found (exit 2 if any)."""
    from adapterbench import data

    report = data.check_file(file, kind, fields=_parse_fields(field), labels=_parse_csv_list(labels))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(data.format_check_report(report))
    if report["problems"]:
        raise typer.Exit(2)


@data_app.command("split")
def data_split(
    file: Path = typer.Argument(..., help="A .jsonl/.csv file, or for text a .txt/.md file or folder."),
    kind: str = typer.Option(..., "--kind", "-k", help=KIND_HELP),
    out: Path = typer.Option(Path("data"), "--out", "-o", help="Folder for NAME_train/_test(/_val).jsonl and leakage.json."),
    ratios: str = typer.Option("0.7,0.3", help="train,test or train,val,test shares (must sum to 1)."),
    seed: int = typer.Option(0, help="Shuffle seed: the same seed gives the same split."),
    ngram: int = typer.Option(8, help="n for the leakage check: held-out items sharing a word n-gram with train."),
    field: List[str] = typer.Option([], "--field", help=FIELD_HELP),
    labels: Optional[str] = typer.Option(None, help="Classification label list, comma-separated (order = index)."),
    keep_code: bool = typer.Option(False, help="Text from markdown: keep fenced code blocks (dropped by default)."),
    keep_markup: bool = typer.Option(False, help="Text from markdown: keep headings, labels and inline markup."),
    name: Optional[str] = typer.Option(None, help="Output file prefix (default: the input's stem)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Split by paragraph (text) or record, seeded, and write a leakage report of held-out vs train n-gram overlap."""
    from adapterbench import data

    summary = data.split_file(
        file, kind, out, ratios=ratios.split(","), seed=seed, ngram=ngram,
        fields=_parse_fields(field), labels=_parse_csv_list(labels), keep_code=keep_code,
        keep_markup=keep_markup, name=name,
    )
    typer.echo(json.dumps(summary, indent=2) if as_json else data.format_split_summary(summary))


@models_app.command("info")
def models_info(
    ref: str = typer.Argument("default", help="'default' (embedded SmolLM2-135M-Instruct), an HF model dir or a .gguf file."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """Architecture, parameter count, stored dtype, chat template and cache path of a base model (converts a GGUF
    file into the cache on first use)."""
    from adapterbench.adapters import model_info

    info = model_info(ref)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    width = max(map(len, info))
    for key, value in info.items():
        typer.echo(f"{key:<{width}}  {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                   else f"{key:<{width}}  {value}")


def _not_yet(issue: int) -> None:
    typer.echo(f"not implemented yet (tracked in issue #{issue})", err=True)
    raise typer.Exit(1)


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def eval_cmd():
    """Score the base and any adapters on a suite's lm-eval tasks; results go to the store."""
    _not_yet(3)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train():
    """Train a QLoRA adapter from a train.yaml, evaluating as it goes (baseline at step 0)."""
    _not_yet(4)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def report():
    """Render HTML, LaTeX and Markdown comparison reports from the store."""
    _not_yet(5)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def gate():
    """Regression gate: candidate vs baseline with paired significance tests; exit 1 on a regression."""
    _not_yet(5)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def chat():
    """Chat with the base or an adapter (chat template, streamed tokens, /reset, /adapter NAME)."""
    _not_yet(5)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def generate():
    """Answer a prompts file with the base and adapters, side by side, into the store."""
    _not_yet(5)


@tasks_app.command("build", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tasks_build():
    """Write the suite's lm-eval task YAML (runs unchanged with lm_eval --include_path DIR)."""
    _not_yet(3)


@tasks_app.command("list", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tasks_list():
    """Show the suite's tasks: type, data, size, metrics."""
    _not_yet(3)


@runs_app.command("list", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def runs_list():
    """List the evaluations in the store."""
    _not_yet(3)


@runs_app.command("show", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def runs_show():
    """Show one evaluation: models, scores with stderr, exports."""
    _not_yet(3)


@app.command()
def demo():
    """The whole flow on the bundled sample domain and the default model: split, baseline, train, eval, report, gate."""
    _not_yet(6)


def main(argv: Optional[list] = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="adapterbench")
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
