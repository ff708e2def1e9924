"""The `adapterbench` command line: parse, call the Python API, print. Heavy imports live inside the commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

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
tasks_app = typer.Typer(help="Compile a suite.yaml into lm-eval task YAML, list its tasks, and the task types.",
                        no_args_is_help=True)
runs_app = typer.Typer(help="List, show and export evaluations kept in the store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(tasks_app, name="tasks")
app.add_typer(runs_app, name="runs")


def _parse_fields(fields: List[str]) -> dict:
    mapping = {}
    for item in fields:
        canonical, sep, column = item.partition("=")
        if not sep or not canonical or not column:
            raise UserError(f"--field expects CANONICAL=COLUMN (e.g. output=completion), got {item!r}", field="--field")
        mapping[canonical] = column
    return mapping


def _parse_csv_list(value: Optional[str]) -> Optional[list]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


KIND_HELP = "text | instruction | multiple_choice | classification | chat"
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
    from adapterbench.datafiles import reading

    report = reading.check_file(file, kind, fields=_parse_fields(field), labels=_parse_csv_list(labels))
    if as_json:
        _echo(json.dumps(report, indent=2), as_json=True)
    else:
        _echo(reading.format_check_report(report))
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
    from adapterbench.datafiles import splitting

    summary = splitting.split_file(
        file, kind, out, ratios=ratios.split(","), seed=seed, ngram=ngram,
        fields=_parse_fields(field), labels=_parse_csv_list(labels), keep_code=keep_code,
        keep_markup=keep_markup, name=name,
    )
    _echo(json.dumps(summary, indent=2) if as_json else splitting.format_split_summary(summary), as_json=as_json)


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
        _echo(json.dumps(info, indent=2), as_json=True)
        return
    width = max(map(len, info))
    for key, value in info.items():
        _echo(f"{key:<{width}}  {value:,}" if isinstance(value, int) and not isinstance(value, bool)
              else f"{key:<{width}}  {value}")


STORE_HELP = "SQLite store (default: $ADAPTERBENCH_STORE or ./adapterbench.sqlite)."
NOOP_HELP = ("Score adapters whose outputs equal the base's bit for bit on a probe (zero LoRA B, targets that "
             "match nothing, weights that did not load): refused by default.")
MISMATCH_HELP = ("Score adapters whose manifest.json names another base than this one (refused by default; "
                 "recorded in the store).")
QUANT_HELP = ("auto (the base as the adapters were trained on it, read from their manifest.json; none without one) "
              "| none | nf4 (4-bit, as QLoRA trains).")
BASE_HELP = "Base model: 'default', an HF model dir or a .gguf file."
ADAPTER_HELP = "A PEFT adapter dir, or LABEL=PATH (repeatable). The base is labelled 'base'."
# the options several commands share, declared once
BaseOption = Annotated[str, typer.Option(help=BASE_HELP)]
AdapterOption = Annotated[List[str], typer.Option("--adapter", "-a", help=ADAPTER_HELP)]
StoreOption = Annotated[Optional[Path], typer.Option(help=STORE_HELP)]
QuantOption = Annotated[str, typer.Option(help=QUANT_HELP)]
DtypeOption = Annotated[str, typer.Option(help="auto (bf16 where the CPU/GPU has it, else fp32) | bf16 | fp32.")]
MismatchOption = Annotated[bool, typer.Option("--allow-base-mismatch", help=MISMATCH_HELP)]
NoopOption = Annotated[bool, typer.Option("--allow-noop-adapter", help=NOOP_HELP)]


@app.command("eval")
def eval_cmd(
    suite: Path = typer.Argument(..., help="suite.yaml: the tasks to score on."),
    base: BaseOption = "default",
    adapter: AdapterOption = [],
    limit: Optional[int] = typer.Option(None, help="Score only the first N items of each task (a quick look)."),
    tasks: Optional[str] = typer.Option(None, help="Only these tasks of the suite, comma-separated."),
    batch_size: str = typer.Option("auto", help="Sequences per forward pass, or 'auto'."),
    dtype: DtypeOption = "auto",
    quant: QuantOption = "auto",
    allow_base_mismatch: MismatchOption = False,
    allow_noop_adapter: NoopOption = False,
    store: StoreOption = None,
    predictions_csv: Optional[Path] = typer.Option(None, help="Also write id, input, reference and each model's answer."),
    output_dir: Optional[Path] = typer.Option(None, help="Also write lm-eval's output here: per model a folder of "
                                              "results_DATE.json and samples_TASK_DATE.jsonl (--log_samples)."),
    report_to: Optional[str] = typer.Option(None, help="Also log the scores to these experiment trackers, "
                                            "comma-separated, as accelerate names them: tensorboard, wandb, mlflow, "
                                            "trackio, comet_ml..."),
    log_dir: Optional[Path] = typer.Option(None, help="Where trackers that write files (TensorBoard) log: "
                                           "LOG_DIR/EVAL_ID."),
    as_json: bool = typer.Option(False, "--json", help='Print {"eval_id": ..., "results": {LABEL: {TASK: {METRIC: VALUE}}}}.'),
):
    """Score the base and every adapter on each task of SUITE, loading the base once. Results (scores with stderr,
    every answer) go to the store; see them again with `adapterbench runs show`.

    Example: adapterbench eval suite.yaml --adapter runs/qa/adapter --adapter r8=runs/r8/adapter --limit 20
    """
    from adapterbench.harness import database, views
    from adapterbench.harness.evaluate import evaluate, results_table

    if batch_size != "auto" and not batch_size.isdigit():
        raise UserError(f"--batch-size expects a number or 'auto', got {batch_size!r}")
    _check_exports(predictions_csv, output_dir)
    trackers = _parse_csv_list(report_to) or []
    if trackers or log_dir:
        from adapterbench.trackers import check_report_to

        check_report_to(trackers, log_dir)
    evaluation = evaluate(suite, base=base, adapters=adapter, limit=limit, tasks=_parse_csv_list(tasks),
                          batch_size=batch_size, dtype=dtype, quant=quant, store=store,
                          command="adapterbench " + " ".join(sys.argv[1:]), allow_base_mismatch=allow_base_mismatch,
                          allow_noop_adapter=allow_noop_adapter)
    if evaluation is None:  # one of several processes (torchrun): the main one writes and prints
        return
    _write_exports(evaluation, predictions_csv, output_dir)
    if trackers:
        from adapterbench.trackers import log_evaluation

        log_evaluation(evaluation, trackers, log_dir)
    if as_json:
        _echo(json.dumps({"eval_id": evaluation["id"], "results": results_table(evaluation)}, indent=2),
              as_json=True)
    else:
        _echo(views.format_evaluation(evaluation))
        _echo(f"\nsaved as {evaluation['id']} in {store or database.default_store_path()}")


def _check_exports(predictions_csv: Optional[Path], output_dir: Optional[Path]) -> None:
    """Export destinations are checked before anything is scored, not found unwritable after the run."""
    from adapterbench import paths

    if predictions_csv:
        paths.output_file(predictions_csv, field="--predictions-csv")
    if output_dir:
        paths.output_dir(output_dir, field="--output-dir")


def _write_exports(evaluation: dict, predictions_csv: Optional[Path], output_dir: Optional[Path]) -> None:
    from adapterbench.harness import exports

    if predictions_csv:
        exports.write_predictions_csv(evaluation, predictions_csv)
    if output_dir:
        exports.write_lm_eval_dir(evaluation, output_dir)


@app.command()
def train(
    config: Path = typer.Argument(..., help="train.yaml (see the README for every key)."),
    overrides: List[str] = typer.Argument(None, help="KEY=VALUE overrides, e.g. lora.r=8 lr=1e-4 max_steps=50."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run dir's last checkpoint, exactly."),
    store: StoreOption = None,
):
    """Train a LoRA adapter (QLoRA by default: NF4 base, bf16 compute), evaluating at step 0 and every eval.every
    steps. Writes OUT/adapter and OUT/best (PEFT dirs), OUT/manifest.json and OUT/metrics.jsonl.

    Example: adapterbench train train.yaml max_steps=100 lora.r=8
    """
    from adapterbench.config import load_train
    from adapterbench.training import train as run_training

    manifest = run_training(load_train(config, overrides or []), resume=resume, store=store)
    if os.environ.get("RANK", "0") != "0":
        return  # under `accelerate launch` / `torchrun`, the main process speaks for the run
    stats = manifest["stats"]
    _echo(f"trained {stats['steps']} steps, {stats['tokens_seen']:,} tokens in {stats['train_seconds']:.0f} s "
          f"({stats['tokens_per_second']:.0f} tokens/s), peak memory {stats['peak_rss_mb']:.0f} MB"
          + (f", GPU {stats['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in stats else "")
          + (" - stopped early" if stats["stopped_early"] else ""))
    for key, value in manifest["final_metrics"].items():
        if key not in ("step", "tokens_seen"):
            _echo(f"  {key:<28} {value:.4f}" if isinstance(value, float) else f"  {key:<28} {value}")
    out = Path(manifest["config"]["out"])
    best = manifest["best"]
    chosen = (f"step {best['step']}, {best['metric']} {best['value']:.4f}" if best["step"] is not None
              else "no evaluation chose one: the final adapter")
    _echo(f"adapter: {out / 'adapter'}   best: {out / 'best'} ({chosen})")


@app.command()
def report(
    eval_ids: List[str] = typer.Option([], "--eval", "-e", help="An evaluation: its id, a unique prefix of one, or "
                                       "'latest' (repeatable: the models of every evaluation are compared)."),
    latest: bool = typer.Option(False, "--latest", help="The newest evaluation (the same as --eval latest)."),
    train_run: List[Path] = typer.Option([], "--train-run", "-t", help="A training run dir (metrics.jsonl, "
                                         "manifest.json); repeatable: the runs' learning curves are overlaid."),
    formats: str = typer.Option("html,latex,md", "--format", "-f", help="Comma-separated: html, latex, md."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html, report.tex + report_table.tex, "
                             "report.md (other files in it are left alone)."),
    store: StoreOption = None,
    reference: Optional[str] = typer.Option(None, help="The model deltas are taken against: LABEL, EVAL_ID:LABEL, "
                                            "or a name the report shows (a label found in several evaluations is "
                                            "shown as ID_TAIL:LABEL). Default: the first evaluation's base."),
    max_answers: int = typer.Option(10, help="Answers shown per list (first items, fixed, broken); Markdown and "
                                    "LaTeX show fewer."),
):
    """Render a comparison report: models and their identity, every task x metric x model with 95 % intervals,
    paired deltas against the base with significance marks, per-task detail (ROUGE P/R/F, classification report and
    confusion matrix, unparseable rate, scores per group), answers side by side with the items each adapter fixed
    and broke, learning curves of training runs overlaid, the leakage report of the data split, and the command and
    environment to reproduce it.

    \b
    Files written into --out:
      report.html       one self-contained page (no script, no network)
      report.tex        standalone LaTeX (pdflatex, booktabs)
      report_table.tex  the main table alone, to \\input in a paper
      report.md         Markdown that fits a pull-request comment

    \b
    Examples:
      adapterbench report --latest --out report/
      adapterbench report --eval ev-20260101 --eval ev-20260102 --reference base --out report/
      adapterbench report --train-run runs/r8 --train-run runs/r16 --format html --out curves/
    """
    from adapterbench.reports import make_report

    paths = make_report(out, eval_refs=[*eval_ids, *(["latest"] if latest else [])], train_runs=train_run,
                        formats=formats, store=store, reference=reference, max_answers=max_answers,
                        command="adapterbench " + " ".join(sys.argv[1:]))
    for path in paths:
        _echo(str(path))


@app.command()
def gate(
    baseline: List[str] = typer.Option(..., "--baseline", "-b", help="The model to hold the line: a REF (see "
                                       "above); repeat it, one per training seed, to test the recipe."),
    candidate: List[str] = typer.Option(..., "--candidate", "-c", help="The model under test: a REF (see above); "
                                        "repeatable like --baseline."),
    store: StoreOption = None,
    rules: Optional[Path] = typer.Option(None, help="gate.yaml (see above). Default: every task of the baseline on "
                                                    "its primary metric, max_drop 0, alpha 0.05."),
    out: Optional[Path] = typer.Option(None, help="Write verdict.json, verdict.md and junit.xml into this folder."),
    junit: Optional[Path] = typer.Option(None, help="Write JUnit XML here (one test per rule; regressions fail)."),
    markdown: Optional[Path] = typer.Option(None, help="Write the Markdown summary here (fits a PR comment)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON instead of a table."),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="ADAPTER_DIR refs: "
                                             + MISMATCH_HELP),
    allow_noop_adapter: bool = typer.Option(False, "--allow-noop-adapter", help="ADAPTER_DIR refs: " + NOOP_HELP),
):
    """Regression gate: is the candidate worse than the baseline, beyond noise? Paired tests on the items both were
    scored on (McNemar's exact test for accuracy-like metrics, a paired permutation test for BLEU, ROUGE, F1,
    perplexity; clusters swapped whole where the suite sets cluster_by), Holm's correction across the rules; each
    rule is improved, unchanged or regressed, with its delta, interval, p-value and minimum detectable delta (MDE).

    \b
    One REF per side tests these two checkpoints: it cannot see seed-to-seed
    noise, so a retrain of the same config may "regress". Several REFs per
    side (one per seed) test the recipe: Student's t across the per-seed
    scores, the seed as the unit of replication.

    \b
    REF is one of:
      LABEL          the newest evaluation in the store with that model label
      EVAL_ID:LABEL  that model of that evaluation (id prefix or 'latest')
      ADAPTER_DIR    a PEFT adapter folder: scored first on the rules' suite
                     (and saved to the store)

    \b
    gate.yaml (every key optional):
      suite: suite.yaml  # needed when a REF is an adapter folder
      base: default      # the base model such adapters are scored on
      alpha: 0.05        # significance level, after Holm's correction
      max_drop: 0        # default tolerated drop: metric units, or "5%"
      rules:             # none: every baseline task, its primary metric
        - {task: qa, metric: rougeL_f1, max_drop: 0.02}
        - {task: notes_ppl, metric: word_perplexity, max_drop: "5%"}

    \b
    A rule regresses when the candidate is worse by more than max_drop
    (a share of the baseline value when written "N%"; for perplexities and
    unparseable_rate worse means higher) AND its Holm-adjusted p-value is
    below alpha: a small noisy drop passes, a real one fails. It improves
    when better with p below alpha. Primary metrics: acc (multiple choice),
    f1_macro (classification), rougeL_f1 (generation), word_perplexity.

    \b
    Exit codes: 0 nothing regressed; 1 a rule regressed; 2 an error, or a
    rule's task has no item scored by both sides (files still written).

    \b
    Example:
      adapterbench gate --baseline qa --candidate runs/qa2/best \\
        --rules gate.yaml --junit gate.xml --markdown gate.md
      adapterbench gate -b old-s0 -b old-s1 -c new-s0 -c new-s1
    """
    from adapterbench import paths
    from adapterbench.harness.gate import run_gate
    from adapterbench.harness import verdict_writers

    if out:
        paths.output_dir(out, field="--out")
    for file, option in ((junit, "--junit"), (markdown, "--markdown")):
        if file:
            paths.output_file(file, field=option)
    verdict = run_gate(baseline, candidate, store=store, rules=rules, allow_base_mismatch=allow_base_mismatch,
                       allow_noop_adapter=allow_noop_adapter)
    if out:
        verdict_writers.write_verdict_json(verdict, out / "verdict.json")
        verdict_writers.write_verdict_markdown(verdict, out / "verdict.md")
        verdict_writers.write_junit(verdict, out / "junit.xml")
    if junit:
        verdict_writers.write_junit(verdict, junit)
    if markdown:
        verdict_writers.write_verdict_markdown(verdict, markdown)
    _echo(verdict_writers.verdict_json(verdict) if as_json else verdict_writers.format_verdict(verdict),
          as_json=as_json)
    raise typer.Exit(verdict["exit_code"])


@app.command()
def plan(
    baseline: List[str] = typer.Option(..., "--baseline", "-b", help="A REF in the store (LABEL or EVAL_ID:LABEL), "
                                       "as the gate takes it; repeatable, one per seed."),
    candidate: List[str] = typer.Option([], "--candidate", "-c", help="Another model or a second seed, to measure "
                                        "the paired spread (repeatable); without it, an independent peer is assumed."),
    delta: Optional[str] = typer.Option(None, help="A delta to detect: metric units (0.05) or a share of the "
                                        "baseline value (5%); prints the items (or seeds) it needs."),
    power: float = typer.Option(0.8, help="The chance of detecting a true delta of that size."),
    rules: Optional[Path] = typer.Option(None, help="gate.yaml: plan its tasks, metrics and alphas (default: every "
                                         "task of the baseline, primary metric, alpha 0.05)."),
    store: StoreOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
):
    """How many items does a gate need? Per task: the spread a paired comparison measures (discordance rate for
    accuracies, the delta's standard error otherwise, clusters whole), the minimum detectable delta (MDE) at the
    suite's current size with 80 % power, and with --delta the items (seeds, for several per side) that delta
    needs. "unchanged" on a task whose MDE is larger than the change you care about says little.

    Example: adapterbench plan --baseline base --candidate qa --delta 0.05
    """
    from adapterbench.harness.plan import format_plan, plan as run_plan
    from adapterbench.harness.verdict_writers import verdict_json

    result = run_plan(baseline, candidate, store=store, rules=rules, delta=delta, power=power)
    _echo(verdict_json(result) if as_json else format_plan(result), as_json=as_json)




@app.command()
def chat(
    base: BaseOption = "default",
    adapter: AdapterOption = [],
    use: Optional[str] = typer.Option(None, help="Start with this label (default: the first adapter, else 'base')."),
    system: Optional[str] = typer.Option(None, help="System prompt."),
    max_new_tokens: int = typer.Option(256, help="Longest answer, in tokens."),
    temperature: float = typer.Option(0.0, help="0 = greedy (as evaluations decode); above 0 samples."),
    dtype: DtypeOption = "auto",
    quant: QuantOption = "auto",
    allow_base_mismatch: MismatchOption = False,
    allow_noop_adapter: NoopOption = False,
):
    """Chat with the base or an adapter in the terminal: the model's chat template, tokens streamed as they come.
    In the chat: /adapter NAME switches model ('base' = none), /adapters lists them, /reset forgets the conversation,
    /system TEXT sets the system prompt, /quit or Ctrl-D ends.

    Example: adapterbench chat --adapter qa=runs/qa/best --adapter r8=runs/r8/best
    """
    from adapterbench.chat import run_chat
    from adapterbench.harness.evaluate import parse_adapters

    from adapterbench.untrusted import visible

    def write(text: str) -> None:
        sys.stdout.write(visible(text))  # streamed answers are untrusted: no escape sequence reaches the terminal
        sys.stdout.flush()

    run_chat(base, parse_adapters(adapter), start_with=use, system_prompt=system, max_new_tokens=max_new_tokens,
             temperature=temperature, dtype=dtype, quant=quant, allow_base_mismatch=allow_base_mismatch,
             allow_noop_adapter=allow_noop_adapter, write=write)


@app.command()
def generate(
    prompts: Path = typer.Option(..., "--prompts", "-p",
                                 help=".txt (one prompt per line), or .jsonl/.csv with 'prompt' (or 'instruction' "
                                      "[+ 'input']) and optional 'reference' (or 'output') and 'id' columns."),
    base: BaseOption = "default",
    adapter: AdapterOption = [],
    system: Optional[str] = typer.Option(None, help="System prompt."),
    max_new_tokens: int = typer.Option(128, help="Longest answer, in tokens."),
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Send prompts as plain text."),
    dtype: DtypeOption = "auto",
    quant: QuantOption = "auto",
    allow_base_mismatch: MismatchOption = False,
    allow_noop_adapter: NoopOption = False,
    store: StoreOption = None,
    predictions_csv: Optional[Path] = typer.Option(None, help="Also write id, prompt, reference and each answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the answers as JSON."),
):
    """Answer every prompt with the base and each adapter (greedy, as evaluations decode) and keep the answers side
    by side in the store, where `adapterbench report --eval ID` shows them.

    Example: adapterbench generate --prompts prompts.txt --adapter qa=runs/qa/best --adapter r8=runs/r8/best
    """
    from adapterbench.harness import database, exports
    from adapterbench.harness.generate import generate as run_generate
    from adapterbench.harness.views import format_answers

    _check_exports(predictions_csv, None)
    evaluation = run_generate(prompts, base=base, adapters=adapter, max_new_tokens=max_new_tokens,
                              system_prompt=system, chat_template=not no_chat_template, dtype=dtype, quant=quant,
                              store=store, command="adapterbench " + " ".join(sys.argv[1:]),
                              allow_base_mismatch=allow_base_mismatch, allow_noop_adapter=allow_noop_adapter)
    if predictions_csv:
        exports.write_predictions_csv(evaluation, predictions_csv)
    if as_json:
        answers = [{k: s[k] for k in ("label", "doc_id", "prompt", "reference", "prediction")}
                   for s in evaluation["samples"]]
        _echo(json.dumps({"eval_id": evaluation["id"], "answers": answers}, indent=2, ensure_ascii=False), as_json=True)
    else:
        _echo(format_answers(evaluation))
        _echo(f"\nsaved as {evaluation['id']} in {store or database.default_store_path()}")


@tasks_app.command("build")
def tasks_build(
    suite: Path = typer.Argument(..., help="suite.yaml"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the task YAML, data and utils.py (replaced whole)."),
):
    """Write the suite as lm-eval tasks: one YAML and one JSONL per task and a utils.py with the metric hooks.
    Run them with lm-eval itself: lm_eval --model hf --model_args pretrained=DIR --include_path OUT --tasks NAMES"""
    from adapterbench import paths
    from adapterbench.config import load_suite
    from adapterbench.tasks.compile import build_suite

    paths.output_dir(out, field="--out")
    entries = build_suite(load_suite(suite), out)
    for entry in entries:
        _echo(f"{entry['name']:<20} {entry['type']:<26} {entry['docs']:>5} docs  {entry['yaml']}")
    chat = [e["name"] for e in entries if e["chat_template"]]
    if chat:
        _echo(f"\nthese tasks expect the chat template (lm_eval --apply_chat_template): {', '.join(chat)}")


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
        _echo(json.dumps([{k: v for k, v in e.items() if k != "yaml"} for e in entries], indent=2), as_json=True)
        return
    for entry in entries:
        _echo(f"{entry['name']:<20} {entry['type']:<26} {entry['docs']:>5} items  "
                   f"chat={'yes' if entry['chat_template'] else 'no':<3}  {', '.join(entry['metrics'])}")


@tasks_app.command("types")
def tasks_types(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """The task types a suite may declare (`type:`): what each scores, the keys of its own (a task of another type
    that sets one is refused; types that generate share max_new_tokens), its headline metric and its metrics."""
    from adapterbench import task_types, terminal

    rows = [{"type": t.name, "summary": t.summary,
             "keys": list(dict.fromkeys(key for model in t.options for key in model.model_fields)),
             "primary": t.primary[0], "metrics": [m.name for m in t.metrics]} for t in task_types.TYPES.values()]
    if as_json:
        _echo(json.dumps(rows, indent=2), as_json=True)
        return
    table = [["type", "scores", "its own keys"]] + [[r["type"], r["summary"], ", ".join(r["keys"]) or "-"] for r in rows]
    _echo("\n".join(terminal.table(table)))


@runs_app.command("list")
def runs_list(store: StoreOption = None,
              limit: int = typer.Option(20, help="Show the newest N."),
              as_json: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """List the evaluations in the store, newest first."""
    from adapterbench.harness import database, views

    if limit < 1:
        raise UserError(f"--limit {limit} is not valid (expected a positive number of evaluations)", field="--limit")
    with database.connect(store, create=False) as conn:
        rows = database.list_evaluations(conn, limit=limit)
    _echo(json.dumps(rows, indent=2) if as_json else views.format_evaluation_list(rows), as_json=as_json)


@runs_app.command("show")
def runs_show(
    eval_id: str = typer.Argument("latest", help="An evaluation id, a unique prefix of one, or 'latest'."),
    store: StoreOption = None,
    predictions_csv: Optional[Path] = typer.Option(None, help="Write id, input, reference and each model's answer."),
    output_dir: Optional[Path] = typer.Option(None, help="Write lm-eval's results JSON here, a folder per model "
                                              "(per-sample JSONL only from eval itself: the store keeps our records)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"eval_id": ..., "results": {LABEL: {TASK: {METRIC: VALUE}}}}.'),
):
    """Show one evaluation: models with identity, scores with stderr; export it for other tools."""
    from adapterbench.harness import database, views
    from adapterbench.harness.evaluate import results_table

    _check_exports(predictions_csv, output_dir)
    with database.connect(store, create=False) as conn:
        evaluation = database.load_evaluation(conn, eval_id, with_samples=bool(predictions_csv))
    _write_exports(evaluation, predictions_csv, output_dir)
    if as_json:
        _echo(json.dumps({"eval_id": evaluation["id"], "results": results_table(evaluation)}, indent=2),
              as_json=True)
    else:
        _echo(views.format_evaluation(evaluation))


@runs_app.command("export")
def runs_export(
    eval_id: str = typer.Argument("latest", help="An evaluation id, a unique prefix of one, or 'latest'."),
    fmt: str = typer.Option(..., "--format", "-f", help="csv | jsonl | parquet (parquet needs pyarrow)."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write (replaced whole)."),
    table: str = typer.Option("samples", help="samples: a row per model x task x item, with its per-sample metrics "
                              "| scores: a row per model x task x metric, with stderr and n."),
    store: StoreOption = None,
):
    """Write one evaluation's per-sample records or scores as a table for pandas, spreadsheets or DuckDB.

    Example: adapterbench runs export latest --format parquet --out samples.parquet
    """
    from adapterbench.harness import database, exports

    exports.check_export(table, fmt, out)
    with database.connect(store, create=False) as conn:
        evaluation = database.load_evaluation(conn, eval_id, with_samples=table == "samples")
    rows = exports.write_export(evaluation, table, fmt, out)
    _echo(f"wrote {rows} {table} rows of {evaluation['id']} to {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("adapterbench-demo"), help="Folder for the demo's data, runs and store."),
    steps: int = typer.Option(60, help="Training steps (evaluated at 0, steps/2 and steps)."),
    limit: Optional[int] = typer.Option(None, help="Score only the first N items of each task (a quick look)."),
):
    """The whole flow on the bundled sample domain and the default model: split with a leakage report, a short
    QLoRA run evaluated as it goes (step 0 = the baseline), base vs adapter, the report (HTML, LaTeX, Markdown) and
    the gate of the adapter against the base. About 3 minutes on 2 CPU cores."""
    from adapterbench import paths
    from adapterbench.demo import run_demo

    paths.output_dir(out, field="--out")
    run_demo(out, steps=steps, limit=limit, echo=_echo)


def _echo(text: str = "", err: bool = False, as_json: bool = False) -> None:
    """Print for a terminal: data, answers and labels are untrusted, so escape sequences and bidi overrides in them
    are shown as code points instead of acting on the terminal; JSON text stays valid and exact (\\u escapes)."""
    from adapterbench.untrusted import visible, visible_json

    typer.echo(visible_json(str(text)) if as_json else visible(text), err=err)


def main(argv: Optional[list] = None) -> None:
    """Console entry point: bad input (ours, or a command line the parser refuses) is one line on stderr and exit
    code 2, never a traceback; any other exception is a bug: one line too, and its traceback with --debug."""
    if argv is None:  # this process is the command
        from adapterbench.collector import tune_for_one_command

        tune_for_one_command()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ADAPTERBENCH_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]  # accepted anywhere on the line
    try:
        code = app(args=argv, prog_name="adapterbench", standalone_mode=False)
    except UserError as err:
        _echo(f"error: {err}", err=True)
        code = 2
    except typer.Abort:
        _echo("aborted", err=True)
        code = 130
    except typer.TyperException as exc:  # the parser's errors (usage, bad parameter): one line, not a box
        message = " ".join(exc.format_message().split())
        if message:  # none when a group without its command printed its help
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            _echo(f"error: {message}{hint}", err=True)
        code = exc.exit_code
    except Exception as exc:
        if debug:
            raise
        message = " ".join(str(exc).split())[:300]
        _echo(f"error: internal error, {type(exc).__name__}: {message} (a bug: run again with --debug for the "
              "traceback and report it)", err=True)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)
