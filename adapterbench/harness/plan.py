"""Power planning from stored evaluations: per task, the spread a paired comparison measured (discordance rate,
the delta's standard error), the minimum detectable delta at the suite's current size, and the items (or seeds)
needed for a chosen delta."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

from adapterbench.config import GateConfig
from adapterbench.errors import UserError


def plan(baseline_refs: Sequence[str], candidate_refs: Sequence[str] = (), *, store: str | Path | None = None,
         rules: GateConfig | str | Path | None = None, delta: float | str | None = None, power: float = 0.8) -> dict:
    """The plan for gating on the rules' tasks and metrics (no rules: every task of the baseline on its primary
    metric, alpha 0.05), measured from the stored evaluations `baseline_refs` (a REF as the gate takes it, one per
    seed) and, where given, `candidate_refs` (another model, or a second seed of the same config).

    With a candidate, each task's spread is the paired comparison's own (the delta's standard error: McNemar's
    discordance for 0/1 metrics, the bootstrap otherwise, clusters resampled whole), so the MDE is the gate's. With
    the baseline alone, the other side is assumed to be a model as good and independent of it item by item
    (spread sqrt(2) x the baseline's own standard error): an upper bound, since models share their easy items.
    `delta` (metric units, or "N%" of the baseline value) asks how many items (seeds, for a recipes row) would
    detect it with `power`.

    Returns {"baseline", "candidate", "question", "assumed_independent", "power", "delta", "rows": [{task, metric,
    n_items, n_clusters, seeds, test, alpha, baseline, delta (observed, None without a candidate), discordance,
    se, mde, target, needed}]}.
    """
    from adapterbench.harness import compare as cmp
    from adapterbench.harness.gate import describe_side, load_rules, load_sides, rule_targets, stored_metric_names

    if not 0 < power < 1:
        raise UserError(f"power must be between 0 and 1, got {power}", field="--power")
    rules, rules_file = load_rules(rules)
    target_delta = None if delta is None else _parse_delta(delta)
    refs = {"baseline": list(baseline_refs), "candidate": list(candidate_refs)}
    for side, listed in refs.items():
        for ref in listed:
            if (Path(ref) / "adapter_config.json").is_file():
                raise UserError(f"{ref} is an adapter dir: plan reads evaluations in the store; score it first "
                                "(adapterbench eval) and pass its label", field=f"--{side}")
    if not refs["baseline"]:
        raise UserError("no baseline given", field="--baseline")
    sides = load_sides({k: v for k, v in refs.items() if v}, rules, store, rules_file)
    base_metrics = stored_metric_names(*sides["baseline"][0])
    cand_metrics = stored_metric_names(*sides["candidate"][0]) if "candidate" in sides else base_metrics
    targets = rule_targets(rules, base_metrics, cand_metrics, rules_file)
    alone = "candidate" not in sides
    # Without a candidate, the baseline against itself gives each task's items, values and its own standard error,
    # doubled in variance for an independent peer (several seeds: the t-test's seed spread is already that).
    comparison = cmp.compare_sides(sides["baseline"], sides.get("candidate", sides["baseline"]),
                                   tasks={t["task"] for t in targets}, metrics={t["metric"] for t in targets},
                                   iters=rules.iters, seed=rules.seed, confidence=rules.confidence)
    found = {(r["task"], r["metric"]): r for r in comparison["rows"]}
    rows = []
    for target in targets:
        row = found.get((target["task"], target["metric"]))
        if row is None:
            continue
        row = dict(row)
        if alone and row["question"] == "checkpoints":
            row["se"] = math.sqrt(2) * row["se_baseline"]
            if row["test"] == "mcnemar":
                row["discordance"] = 2 * row["baseline"] * (1 - row["baseline"])
        wanted = None if target_delta is None else (
            target_delta[0] / 100 * abs(row["baseline"]) if target_delta[1] else target_delta[0])
        rows.append({
            "task": row["task"], "metric": row["metric"], "n_items": row["n_items"], "n_clusters": row["n_clusters"],
            "seeds": row["seeds"], "question": row["question"], "test": row["test"], "alpha": target["alpha"],
            "baseline": row["baseline"], "delta": None if alone else row["delta"],
            "discordance": row["discordance"], "se": row["se"],
            "mde": cmp.minimum_detectable_delta(row, alpha=target["alpha"], power=power),
            "target": wanted,
            "needed": None if not wanted else cmp.units_for_delta(row, wanted, alpha=target["alpha"], power=power)})
    if not rows:
        raise UserError("no task of the rules has per-sample records on both sides: nothing to plan")
    return {"baseline": describe_side(refs["baseline"], sides["baseline"]),
            "candidate": None if alone else describe_side(refs["candidate"], sides["candidate"]),
            "question": rows[0]["question"], "assumed_independent": alone, "power": power,
            "delta": delta, "rows": rows}


def _parse_delta(value: float | str) -> tuple[float, bool]:
    """(number, is a share of the baseline) from 0.05 or "5%"."""
    text = str(value).strip()
    try:
        number = float(text.removesuffix("%"))
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise UserError(f"--delta is a positive number in the metric's units (e.g. 0.05) or a share of the "
                        f"baseline value (e.g. 5%), got {value!r}", field="--delta")
    return number, text.endswith("%")


def format_plan(result: dict) -> str:
    """The plan as a terminal table, with what it assumed."""
    power = f"{result['power']:.0%}"
    wanted = result["delta"] is not None
    unit = "seeds per side" if result["question"] == "recipes" else "items"
    head = ["task", "metric", "n", "baseline", "delta seen", "spread", f"MDE ({power} power)"]
    table = [head + ([f"{unit} for delta {result['delta']}"] if wanted else [])]
    for row in result["rows"]:
        n = str(row["n_items"]) + (f" ({row['n_clusters']} clusters)" if row["n_clusters"] else "")
        spread = (f"discordance {row['discordance']:.3f}" if row["discordance"] is not None
                  else f"se {row['se']:.4g}" + (f", {sum(row['seeds'])} seeds" if row["question"] == "recipes" else ""))
        cells = [row["task"], row["metric"], n, f"{row['baseline']:.4g}",
                 "-" if row["delta"] is None else f"{row['delta']:+.4g}", spread, _number(row["mde"])]
        if wanted:
            share = str(result["delta"]).strip().endswith("%")
            cells.append("-" if row["needed"] is None else f"{row['needed']:,}"
                         + (f" (delta {row['target']:.4g})" if share else ""))
        table.append(cells)
    from adapterbench import terminal
    from adapterbench.harness.verdict_writers import side_text

    sides = [f"baseline:  {side_text(result['baseline'])}"]
    if result["candidate"]:
        sides.append(f"candidate: {side_text(result['candidate'])}")
    notes = [f"MDE: the smallest true delta a gate on these items detects with {power} power at each rule's alpha "
             "(Holm over m rules tests the first at alpha / m: pass --rules with that alpha for the worst case)."]
    if result["assumed_independent"]:
        notes.append("No candidate: the spread assumes a second model as good as the baseline and independent of it "
                     "item by item, an upper bound (models share their easy items); pass --candidate, e.g. a second "
                     "seed, to measure it.")
    elif result["question"] == "checkpoints":
        notes.append("If the candidate is a second seed of the baseline's config, its delta is seed noise: a gate of "
                     "one checkpoint per side flags such deltas once they exceed the MDE.")
    return "\n".join([*sides, "", *terminal.table(table), "",
                      *(textwrap.fill(note, 116) for note in notes)])


def _number(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"
