"""`adapterbench demo`: the flow on the bundled sample domain and the default model, in a folder of its own:
split with a leakage report, a short QLoRA run evaluated as it goes (step 0 is the baseline), base vs adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLE = Path(__file__).parent / "sample"


def run_demo(out: Path, steps: int = 60, echo=print) -> dict:
    from adapterbench import data
    from adapterbench.config import load_train
    from adapterbench.harness import store as store_mod
    from adapterbench.harness.evaluate import evaluate
    from adapterbench.training import train

    out = Path(out).resolve()
    if (out / "runs").exists():
        shutil.rmtree(out / "runs")  # a demo starts over; the data and configs are re-copied below
    shutil.copytree(SAMPLE, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    store = out / "demo.sqlite"
    store.unlink(missing_ok=True)

    echo("1/3  split the course notes 70/30 by paragraph, with a leakage report")
    split = data.split_file(out / "notes.md", "text", out / "data", ratios=[0.7, 0.3], seed=0, name="notes")
    echo(data.format_split_summary(split))

    echo(f"\n2/3  train a QLoRA adapter on the study sheet: {steps} steps, evaluated at step 0 (baseline) and "
         f"every {steps // 2}")
    config = load_train(out / "train.yaml", [f"max_steps={steps}", f"eval.every={steps // 2}"])
    manifest = train(config, store=store)
    stats = manifest["stats"]
    echo(f"     {stats['steps']} steps, {stats['tokens_seen']:,} tokens, {stats['tokens_per_second']:.0f} tokens/s; "
         f"best checkpoint at step {manifest['best']['step']} ({manifest['best']['metric']})")

    echo("\n3/3  score the base and the adapter on the suite")
    evaluation = evaluate(out / "suite.yaml", adapters={"qa": str(config.out / "best")}, store=store,
                          command="adapterbench demo")
    echo(store_mod.format_evaluation(evaluation))
    echo(f"\neverything is in {out}: data/ (splits, leakage reports), runs/qa/ (adapter, best, manifest.json, "
         f"metrics.jsonl), demo.sqlite (adapterbench runs show --store {store})")
    return {"split": split, "manifest": manifest, "evaluation_id": evaluation["id"]}
