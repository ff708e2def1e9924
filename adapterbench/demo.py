"""`adapterbench demo`: the whole flow on the bundled sample domain and the default model, in a folder of its own:
split with a leakage report, a short QLoRA run evaluated as it goes (step 0 is the baseline), base vs adapter,
the report in HTML, LaTeX and Markdown, and the gate of the adapter against the base."""

from __future__ import annotations

import shutil
from pathlib import Path

from adapterbench.errors import UserError

SAMPLE = Path(__file__).parent / "sample"


def training_mix(out: Path) -> dict:
    """The study sheet's training answers plus the labeled topic sentences as instructions (prompted as the topics
    task is scored): an adapter trained on the answers alone learns to say "training" to every topic sentence (the
    word fills its answers), and classification drops below the base."""
    from adapterbench.config import load_suite
    from adapterbench.datafiles.reading import read_records
    from adapterbench.datafiles.writing import write_jsonl
    from adapterbench.tasks.compile import task_pairs

    qa = read_records(out / "data" / "qa_train.jsonl", "instruction")
    topics_task = next(t for t in load_suite(out / "suite.yaml").tasks if t.name == "topics")
    topics = [{"id": pair["id"], "instruction": pair["messages"][-1]["content"], "input": "", "output": pair["target"]}
              for pair in task_pairs(topics_task, out / "data" / "topics_train.jsonl")]
    path = out / "data" / "demo_train.jsonl"
    write_jsonl(path, qa + topics)
    return {"path": path, "qa": len(qa), "topics": len(topics)}


def run_demo(out: Path, steps: int = 60, limit: int | None = None, echo=print) -> dict:
    """Run the five steps into `out`; `limit` scores only the first N items of each task (a quick look)."""
    from adapterbench.config import load_train
    from adapterbench.datafiles import splitting
    from adapterbench.harness.gate import run_gate
    from adapterbench.harness import verdict_writers
    from adapterbench.harness import views
    from adapterbench.harness.evaluate import evaluate
    from adapterbench.reports import make_report
    from adapterbench.training import train

    for name, value in (("--steps", steps), ("--limit", limit)):
        if value is not None and value < 1:  # checked before the demo folder is touched
            raise UserError(f"{name} {value} is not valid (expected a positive number)", field=name)
    out = Path(out).resolve()
    for stale in ("runs", "report", "gate"):
        shutil.rmtree(out / stale, ignore_errors=True)  # a demo starts over; data and configs are re-copied below
    shutil.copytree(SAMPLE, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    store = out / "demo.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)

    echo("1/5  split the course notes 70/30 by paragraph, with a leakage report")
    split = splitting.split_file(out / "notes.md", "text", out / "data", ratios=[0.7, 0.3], seed=0, name="notes")
    echo(splitting.format_split_summary(split))

    mix = training_mix(out)
    echo(f"\n2/5  train a QLoRA adapter: {mix['qa']} study-sheet answers + {mix['topics']} labeled topic sentences "
         f"({mix['path'].relative_to(out)}), {steps} steps, evaluated at step 0 (the baseline) and every "
         f"{max(steps // 2, 1)}")
    overrides = [f"max_steps={steps}", f"eval.every={max(steps // 2, 1)}", f"data.train={mix['path']}"]
    config = load_train(out / "train.yaml", overrides + ([f"eval.limit={limit}"] if limit else []))
    manifest = train(config, store=store)
    stats = manifest["stats"]
    echo(f"     {stats['steps']} steps, {stats['tokens_seen']:,} tokens, {stats['tokens_per_second']:.0f} tokens/s; "
         f"best checkpoint at step {manifest['best']['step']} ({manifest['best']['metric']})")

    echo("\n3/5  score the base and the adapter on the suite")
    evaluation = evaluate(out / "suite.yaml", adapters={"qa": str(config.out / "best")}, store=store, limit=limit,
                          command=f"adapterbench eval {out / 'suite.yaml'} --adapter qa={config.out / 'best'} "
                                  f"--store {store}")
    echo(views.format_evaluation(evaluation))

    echo("\n4/5  the report: HTML, LaTeX and Markdown")
    written = make_report(out / "report", eval_refs=[evaluation["id"]], train_runs=[config.out], store=store,
                          command=f"adapterbench report --eval {evaluation['id']} --train-run {config.out} "
                                  f"--store {store} --out {out / 'report'}")
    echo("\n".join(f"     {path}" for path in written))

    echo("\n5/5  the gate: adapter (candidate) against the base (baseline), paired tests with Holm's correction")
    verdict = run_gate(f"{evaluation['id']}:base", f"{evaluation['id']}:qa", store=store,
                       warn=lambda message: echo(f"     warning: {message}"))
    (out / "gate").mkdir()
    gate_files = [verdict_writers.write_verdict_json(verdict, out / "gate" / "verdict.json"),
                  verdict_writers.write_verdict_markdown(verdict, out / "gate" / "verdict.md"),
                  verdict_writers.write_junit(verdict, out / "gate" / "junit.xml")]
    echo(verdict_writers.format_verdict(verdict))

    echo(f"\neverything is in {out}:\n"
         f"  data/       splits and their leakage reports, demo_train.jsonl\n"
         f"  runs/qa/    adapter/ and best/ (PEFT dirs), checkpoints/, manifest.json, metrics.jsonl\n"
         f"  report/     {', '.join(p.name for p in written)}  (open report.html in a browser)\n"
         f"  gate/       {', '.join(p.name for p in gate_files)}  (exit code {verdict['exit_code']} in CI)\n"
         f"  demo.sqlite the store: adapterbench runs list --store {store}")
    return {"split": split, "manifest": manifest, "evaluation_id": evaluation["id"], "report": written,
            "verdict": verdict}
