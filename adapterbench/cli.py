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


STORE_HELP = "SQLite store (default: $ADAPTERBENCH_STORE or ./adapterbench.sqlite)."


@app.command("eval")
def eval_cmd(
    suite: Path = typer.Argument(..., help="suite.yaml: the tasks to score on."),
    base: str = typer.Option("default", help="Base model: 'default', an HF model dir or a .gguf file."),
    adapter: List[str] = typer.Option([], "--adapter", "-a",
                                      help="A PEFT adapter dir, or LABEL=PATH (repeatable). The base is labelled 'base'."),
    limit: Optional[int] = typer.Option(None, help="Score only the first N items of each task (a quick look)."),
    tasks: Optional[str] = typer.Option(None, help="Only these tasks of the suite, comma-separated."),
    batch_size: str = typer.Option("auto", help="Sequences per forward pass, or 'auto'."),
    dtype: str = typer.Option("auto", help="auto (bf16 where the CPU/GPU has it, else fp32) | bf16 | fp32."),
    quant: str = typer.Option("none", help="none | nf4 (load the base in 4-bit, as QLoRA trains it)."),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    predictions_csv: Optional[Path] = typer.Option(None, help="Also write id, input, reference and each model's answer."),
    output_dir: Optional[Path] = typer.Option(None, help="Also write lm-eval results JSON per model here."),
    as_json: bool = typer.Option(False, "--json", help='Print {"eval_id": ..., "results": {LABEL: {TASK: {METRIC: VALUE}}}}.'),
):
    """Score the base and every adapter on each task of SUITE, loading the base once. Results (scores with stderr,
    every answer) go to the store; see them again with `adapterbench runs show`.

    Example: adapterbench eval suite.yaml --adapter runs/qa/adapter --adapter r8=runs/r8/adapter --limit 20
    """
    from adapterbench.harness import store as store_mod
    from adapterbench.harness.evaluate import evaluate, results_table

    if batch_size != "auto" and not batch_size.isdigit():
        raise UserError(f"--batch-size expects a number or 'auto', got {batch_size!r}")
    evaluation = evaluate(suite, base=base, adapters=adapter, limit=limit, tasks=_parse_csv_list(tasks),
                          batch_size=batch_size, dtype=dtype, quant=quant, store=store,
                          command="adapterbench " + " ".join(sys.argv[1:]))
    _write_exports(evaluation, predictions_csv, output_dir)
    if as_json:
        typer.echo(json.dumps({"eval_id": evaluation["id"], "results": results_table(evaluation)}, indent=2))
    else:
        typer.echo(store_mod.format_evaluation(evaluation))
        typer.echo(f"\nsaved as {evaluation['id']} in {store or store_mod.default_store_path()}")


def _write_exports(evaluation: dict, predictions_csv: Optional[Path], output_dir: Optional[Path]) -> None:
    from adapterbench.harness import store as store_mod

    if predictions_csv:
        store_mod.write_predictions_csv(evaluation, predictions_csv)
    if output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
        for model in evaluation["models"]:
            name = model["label"].replace("/", "__")
            path = output_dir / f"results_{evaluation['id']}_{name}.json"
            path.write_text(json.dumps(store_mod.export_lm_eval(evaluation, model["label"]), indent=2, default=str))


@app.command()
def train(
    config: Path = typer.Argument(..., help="train.yaml (see the README for every key)."),
    overrides: List[str] = typer.Argument(None, help="KEY=VALUE overrides, e.g. lora.r=8 lr=1e-4 max_steps=50."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run dir's last checkpoint, exactly."),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
):
    """Train a LoRA adapter (QLoRA by default: NF4 base, bf16 compute), evaluating at step 0 and every eval.every
    steps. Writes OUT/adapter and OUT/best (PEFT dirs), OUT/manifest.json and OUT/metrics.jsonl.

    Example: adapterbench train train.yaml max_steps=100 lora.r=8
    """
    from adapterbench.config import load_train
    from adapterbench.training import train as run_training

    manifest = run_training(load_train(config, overrides or []), resume=resume, store=store)
    stats = manifest["stats"]
    typer.echo(f"trained {stats['steps']} steps, {stats['tokens_seen']:,} tokens in {stats['train_seconds']:.0f} s "
               f"({stats['tokens_per_second']:.0f} tokens/s), peak memory {stats['peak_rss_mb']:.0f} MB"
               + (" - stopped early" if stats["stopped_early"] else ""))
    for key, value in manifest["final_metrics"].items():
        if key not in ("step", "tokens_seen"):
            typer.echo(f"  {key:<28} {value:.4f}" if isinstance(value, float) else f"  {key:<28} {value}")
    out = Path(manifest["config"]["out"])
    typer.echo(f"adapter: {out / 'adapter'}   best: {out / 'best'} (step {manifest['best']['step']})")


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


@tasks_app.command("build")
def tasks_build(
    suite: Path = typer.Argument(..., help="suite.yaml"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the task YAML, data and utils.py (replaced whole)."),
):
    """Write the suite as lm-eval tasks: one YAML and one JSONL per task and a utils.py with the metric hooks.
    Run them with lm-eval itself: lm_eval --model hf --model_args pretrained=DIR --include_path OUT --tasks NAMES"""
    from adapterbench.config import load_suite
    from adapterbench.tasks.compile import build_suite

    entries = build_suite(load_suite(suite), out)
    for entry in entries:
        typer.echo(f"{entry['name']:<20} {entry['type']:<26} {entry['docs']:>5} docs  {entry['yaml']}")
    chat = [e["name"] for e in entries if e["chat_template"]]
    if chat:
        typer.echo(f"\nthese tasks expect the chat template (lm_eval --apply_chat_template): {', '.join(chat)}")


@tasks_app.command("list")
def tasks_list(suite: Path = typer.Argument(..., help="suite.yaml"),
               as_json: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """Show the suite's tasks: type, data file, number of items, chat template, metrics."""
    import tempfile

    from adapterbench.config import load_suite
    from adapterbench.tasks.compile import build_suite

    with tempfile.TemporaryDirectory() as tmp:
        entries = build_suite(load_suite(suite), Path(tmp) / "tasks")
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in e.items() if k != "yaml"} for e in entries], indent=2))
        return
    for entry in entries:
        typer.echo(f"{entry['name']:<20} {entry['type']:<26} {entry['docs']:>5} items  "
                   f"chat={'yes' if entry['chat_template'] else 'no':<3}  {', '.join(entry['metrics'])}")


@runs_app.command("list")
def runs_list(store: Optional[Path] = typer.Option(None, help=STORE_HELP),
              limit: int = typer.Option(20, help="Show the newest N."),
              as_json: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """List the evaluations in the store, newest first."""
    from adapterbench.harness import store as store_mod

    with store_mod.connect(store) as conn:
        rows = store_mod.list_evaluations(conn, limit=limit)
    typer.echo(json.dumps(rows, indent=2) if as_json else store_mod.format_evaluation_list(rows))


@runs_app.command("show")
def runs_show(
    eval_id: str = typer.Argument("latest", help="An evaluation id, a unique prefix of one, or 'latest'."),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    predictions_csv: Optional[Path] = typer.Option(None, help="Write id, input, reference and each model's answer."),
    output_dir: Optional[Path] = typer.Option(None, help="Write lm-eval results JSON per model here."),
    as_json: bool = typer.Option(False, "--json", help='Print {"eval_id": ..., "results": {LABEL: {TASK: {METRIC: VALUE}}}}.'),
):
    """Show one evaluation: models with identity, scores with stderr; export it for other tools."""
    from adapterbench.harness import store as store_mod
    from adapterbench.harness.evaluate import results_table

    with store_mod.connect(store) as conn:
        evaluation = store_mod.load_evaluation(conn, eval_id, with_samples=bool(predictions_csv))
    _write_exports(evaluation, predictions_csv, output_dir)
    if as_json:
        typer.echo(json.dumps({"eval_id": evaluation["id"], "results": results_table(evaluation)}, indent=2))
    else:
        typer.echo(store_mod.format_evaluation(evaluation))


@app.command()
def demo(
    out: Path = typer.Option(Path("adapterbench-demo"), help="Folder for the demo's data, runs and store."),
    steps: int = typer.Option(60, help="Training steps (evaluated at 0, steps/2 and steps)."),
):
    """The flow on the bundled sample domain and the default model: split with a leakage report, a short QLoRA run
    evaluated as it goes, then base vs adapter. (The report and the gate join when they exist: issues #5, #6.)"""
    from adapterbench.demo import run_demo

    run_demo(out, steps=steps, echo=typer.echo)


def main(argv: Optional[list] = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="adapterbench")
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
