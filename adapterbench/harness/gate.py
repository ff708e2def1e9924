"""The regression gate: a candidate model against a baseline, one verdict per rule (improved / unchanged / regressed)
from paired tests with Holm's correction; verdict_writers writes it out."""

from __future__ import annotations

import difflib
import math
import sys
from contextlib import closing
from pathlib import Path
from typing import Callable, Sequence

from adapterbench.config import GateConfig, key_line, load_gate
from adapterbench.errors import UserError

EXIT_CODES = {"passed": 0, "regressed": 1, "incomplete": 2}
VERDICT_MARKS = {"improved": "✅ improved", "unchanged": "➖ unchanged", "regressed": "❌ regressed",
                 "missing": "⚠️ missing"}


def run_gate(baseline_ref: str | Sequence[str], candidate_ref: str | Sequence[str], *,
             store: str | Path | None = None, rules: GateConfig | str | Path | None = None,
             warn: Callable[[str], None] | None = None, allow_base_mismatch: bool = False,
             allow_noop_adapter: bool = False) -> dict:
    """Judge the candidate against the baseline on every rule (no rules: every task of the baseline, on its primary
    metric, max_drop 0, alpha 0.05).

    Each side is one REF or several (one per training seed of the same config). A REF is a model label (its newest
    evaluation in the store), `EVAL_ID:LABEL`, or a PEFT adapter dir, which is scored first on the rules' suite
    (and saved to the store). A row is "regressed" when the candidate is worse than the baseline by more than the
    rule's max_drop AND its Holm-adjusted p-value is below the rule's alpha, "improved" when it is better with
    p_holm < alpha, "unchanged" otherwise; "missing" when the two sides share no item of the task.

    Which question the p-values answer depends on the sides (the verdict's `question`):
    - one REF per side, "checkpoints": do these two models differ on items like these? Holm over all rule rows
      keeps the chance that two models that are equally good on the task's items fail the build below alpha. It
      cannot see seed-to-seed noise: two seeds of one config differ by more than item noise, and this question
      calls that a difference (with an accuracy spread of 3 points across seeds, 9 % false alarms at 300 items).
    - several REFs on a side, "recipes": do the two training configs differ, beyond seed-to-seed noise? Each
      seed's aggregate on the items all runs share is one observation (Student's t across them), so two sets of
      seeds of one config fail at most at alpha (exactly so for normal seed scores); its interval is for these
      items, not a new test set.
    status: "regressed" if any row regressed, else "incomplete" if any is missing, else "passed" (exit 1 / 2 / 0).
    Partial overlaps and other caveats go to `warnings` and to `warn` (default: stderr).
    """
    from adapterbench.harness.compare import compare_sides
    from adapterbench.harness import stats

    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    rules, rules_file = load_rules(rules)
    refs = {side: [ref] if isinstance(ref, str) else list(ref)
            for side, ref in (("baseline", baseline_ref), ("candidate", candidate_ref))}
    for side, listed in refs.items():
        if not listed:
            raise UserError(f"no {side} given", field=f"--{side}")
    sides = load_sides(refs, rules, store, rules_file, allow_base_mismatch, allow_noop_adapter)
    warnings = []

    def note(message: str) -> None:
        warnings.append(message)
        warn(message)

    names = {side: [f"{e['id']}:{label}" for e, label in runs] for side, runs in sides.items()}
    for side, listed in names.items():
        for name in sorted({n for n in listed if listed.count(n) > 1}):
            note(f"{name} is given twice as a {side}: seeds must be separate runs")
    for name in (n for n in dict.fromkeys(names["baseline"]) if n in names["candidate"]):
        note(f"baseline and candidate are the same model ({name})")
    base_metrics = stored_metric_names(*sides["baseline"][0])
    cand_metrics = stored_metric_names(*sides["candidate"][0])
    targets = rule_targets(rules, base_metrics, cand_metrics, rules_file)
    comparison = compare_sides(sides["baseline"], sides["candidate"], tasks={t["task"] for t in targets},
                               metrics={t["metric"] for t in targets}, iters=rules.iters, seed=rules.seed,
                               confidence=rules.confidence)
    found = {(r["task"], r["metric"]): r for r in comparison["rows"]}
    for task, counts in comparison["unmatched"].items():
        if counts["only_baseline"] or counts["only_candidate"]:
            note(f"task {task}: the two sides were not scored on the same items: {counts['shared']} shared, "
                 f"{counts['only_baseline']} only in the baseline, {counts['only_candidate']} only in the candidate")
    rows = [_verdict_row(t, found.get((t["task"], t["metric"])), comparison["unmatched"][t["task"]]) for t in targets]
    compared = [r for r in rows if r["verdict"] != "missing"]
    for row, adjusted in zip(compared, stats.holm([r["p_value"] for r in compared])):
        row["p_holm"] = adjusted
        row["verdict"] = _verdict(row)
        # Newcombe's interval is not McNemar's inversion, nor the bootstrap the permutation test's: say so where
        # an interval excluding 0 would read as significant on a row the test left unchanged.
        row["interval_disagrees"] = row["verdict"] == "unchanged" and (row["ci_low"] > 0 or row["ci_high"] < 0)
        if row["interval_disagrees"]:
            row["note"] = "; ".join(filter(None, [row["note"], _INTERVAL_NOTE.format(test=row["test"])]))
    for row in rows:
        if row["verdict"] == "missing":
            note(f"{row['task']}/{row['metric']}: {row['note']}")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICT_MARKS}
    status = "regressed" if counts["regressed"] else "incomplete" if counts["missing"] else "passed"
    question = "recipes" if any(len(runs) > 1 for runs in sides.values()) else "checkpoints"
    return {"status": status, "passed": status == "passed", "exit_code": EXIT_CODES[status], "counts": counts,
            "question": question, "answers": _question_text(question, sides),
            "baseline": describe_side(refs["baseline"], sides["baseline"]),
            "candidate": describe_side(refs["candidate"], sides["candidate"]),
            "rules_file": rules_file, "alpha": rules.alpha, "confidence": rules.confidence, "iters": rules.iters,
            "seed": rules.seed, "rows": rows, "unmatched": comparison["unmatched"], "warnings": warnings}


_INTERVAL_NOTE = ("the interval excludes 0 but the {test} test's Holm-adjusted p is not below alpha: the verdict "
                  "follows the test (the interval is approximate)")


def _question_text(question: str, sides: dict) -> str:
    """One sentence on what the verdict tested and what it cannot see."""
    if question == "checkpoints":
        return ("Tests these two checkpoints on these items; it cannot see seed-to-seed noise (a retrain of the same "
                "config can differ by more than item noise): to test the training recipe, pass several --baseline "
                "and --candidate evaluations, one per seed.")
    n_base, n_cand = len(sides["baseline"]), len(sides["candidate"])
    return (f"Tests the recipes: {n_base} baseline seed{'s' if n_base != 1 else ''} against {n_cand} candidate "
            f"seed{'s' if n_cand != 1 else ''}, the seed as the unit (Student's t across per-seed scores on the items "
            "all runs share); the interval is for these items, not a new test set.")


def load_rules(rules: GateConfig | str | Path | None) -> tuple[GateConfig, str | None]:
    """(the rules, the file they came from): a gate.yaml path is loaded, None means the defaults."""
    if rules is None:
        return GateConfig(), None
    if isinstance(rules, GateConfig):
        return rules, None
    return load_gate(rules), str(rules)


def describe_side(refs: list[str], runs: list[tuple[dict, str]]) -> dict:
    """A side of the verdict: the first run's ref, evaluation id and label (a one-seed side is just that), and
    every run under "runs"."""
    listed = [{"ref": ref, "evaluation_id": e["id"], "label": label} for ref, (e, label) in zip(refs, runs)]
    return {**listed[0], "runs": listed}


def load_sides(refs: dict[str, list[str]], rules: GateConfig, store, rules_file,
                allow_base_mismatch: bool = False, allow_noop_adapter: bool = False
                ) -> dict[str, list[tuple[dict, str]]]:
    """{side: [(evaluation with samples, label) per REF]}. Labels are resolved first (a typo fails before minutes
    of scoring); adapter dirs are then scored together, the base loaded once."""
    from adapterbench.harness import database
    from adapterbench.harness.evaluate import evaluate, parse_adapters

    entries = [(side, i, ref) for side, listed in refs.items() for i, ref in enumerate(listed)]
    adapters = {(side, i): ref for side, i, ref in entries if (Path(ref) / "adapter_config.json").is_file()}
    if adapters and rules.suite is None:
        raise UserError(f"{' and '.join(adapters.values())}: an adapter dir is scored before the gate, and that "
                        "needs a suite: set 'suite:' in the rules file (--rules gate.yaml), or pass a label "
                        "already in the store", path=rules_file, field="suite")
    out: dict[tuple[str, int], tuple[dict, str]] = {}
    with closing(database.connect(store, create=bool(adapters))) as conn:  # only scoring adapters writes to it
        for side, i, ref in entries:
            if (side, i) in adapters:
                continue
            try:
                eval_id, label = database.resolve_model_ref(conn, ref)
            except UserError as err:
                if Path(ref).is_dir():
                    err.message += f"; {ref} is a folder without adapter_config.json, so not an adapter either"
                err.field = f"--{side}"
                raise
            out[side, i] = (database.load_evaluation(conn, eval_id, with_samples=True), label)
    if adapters:
        labels: dict[tuple[str, int], str] = {}
        for key, ref in adapters.items():
            label = next(iter(parse_adapters([ref])))
            labels[key] = f"{label}-{key[0]}{'' if key[1] == 0 else key[1] + 1}" if label in labels.values() else label
        evaluation = evaluate(rules.suite, base=rules.base, adapters={labels[k]: adapters[k] for k in adapters},
                              store=store, allow_base_mismatch=allow_base_mismatch,
                              allow_noop_adapter=allow_noop_adapter)
        out.update({key: (evaluation, labels[key]) for key in adapters})
    return {side: [out[side, i] for i in range(len(listed))] for side, listed in refs.items()}


def stored_metric_names(evaluation: dict, label: str) -> dict[str, list[str]]:
    """{task: metric names} of one model, in the order its per-sample records list them."""
    out: dict[str, list[str]] = {}
    for sample in evaluation["samples"]:
        if sample["label"] == label and sample["task"] not in out:
            out[sample["task"]] = list(sample["metrics"])
    return out


def rule_targets(rules: GateConfig, base_metrics: dict, cand_metrics: dict, rules_file) -> list[dict]:
    """The (task, metric, max_drop, alpha) rows to judge. A rule naming a task or metric neither side has is a
    mistake in the rules file (UserError); one side lacking it is a finding (a "missing" row)."""
    from adapterbench.task_types import primary_metric

    known = {**cand_metrics, **base_metrics}
    if not known:
        raise UserError("neither model has per-sample records in the store: nothing to compare item by item")
    if not rules.rules:
        return [{"task": task, "metric": primary_metric(names), "max_drop": rules.max_drop, "alpha": rules.alpha}
                for task, names in base_metrics.items()]
    targets = []
    for i, rule in enumerate(rules.rules):
        if rule.task not in known:
            close = difflib.get_close_matches(rule.task, list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; tasks scored: {', '.join(known) or 'none'}"
            raise UserError(f"no task '{rule.task}' in the baseline or the candidate{hint}", path=rules_file,
                            line=key_line(rules_file, ("rules", i, "task")), field=f"rules[{i}].task")
        metric = rule.metric or primary_metric(known[rule.task])
        if metric not in known[rule.task]:
            close = difflib.get_close_matches(metric, known[rule.task], n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"it has: {', '.join(known[rule.task])}"
            raise UserError(f"task '{rule.task}' has no metric '{metric}'; {hint}", path=rules_file,
                            line=key_line(rules_file, ("rules", i, "metric")), field=f"rules[{i}].metric")
        targets.append({"task": rule.task, "metric": metric,
                        "max_drop": rules.max_drop if rule.max_drop is None else rule.max_drop,
                        "alpha": rules.alpha if rule.alpha is None else rule.alpha})
    return targets


def _verdict_row(target: dict, row: dict | None, unmatched: dict) -> dict:
    from adapterbench.harness.compare import minimum_detectable_delta
    from adapterbench.task_types import higher_is_better

    out = {"task": target["task"], "metric": target["metric"], "higher_is_better": higher_is_better(target["metric"]),
           "verdict": "missing", "test": None, "method": None, "interval": None, "seeds": None, "n_items": 0,
           "n_clusters": None, "baseline": None, "candidate": None, "delta": None, "ci_low": None, "ci_high": None,
           "p_value": None, "p_holm": None, "mde": None, "alpha": target["alpha"], "max_drop": target["max_drop"],
           "allowed_drop": None, "unmatched": unmatched, "note": "", "interval_disagrees": False}
    if row is None:
        out["note"] = ("the baseline and the candidate share no item of this task (baseline "
                       f"{unmatched['only_baseline']}, candidate {unmatched['only_candidate']} items)"
                       if not unmatched["shared"] else "one side has no value of this metric")
        return out
    out.update({k: row[k] for k in ("test", "method", "interval", "seeds", "n_items", "n_clusters", "baseline",
                                    "candidate", "delta", "ci_low", "ci_high", "p_value")})
    # the MDE at the rule's own alpha (Holm over m rules asks the first for alpha / m: the MDE is a lower bound)
    out["mde"] = minimum_detectable_delta(row, alpha=target["alpha"])
    if not all(math.isfinite(row[k]) for k in ("delta", "ci_low", "ci_high", "p_value")):
        out["note"] = "the metric is not finite on these items"
        return out
    out["allowed_drop"] = _allowed_drop(target["max_drop"], row["baseline"])
    if unmatched["only_baseline"] or unmatched["only_candidate"]:
        out["note"] = (f"compared on the {row['n_items']} shared items ({unmatched['only_baseline']} only in the "
                       f"baseline, {unmatched['only_candidate']} only in the candidate)")
    out["verdict"] = "unchanged"
    return out


def _allowed_drop(max_drop: float | str, baseline: float) -> float:
    if isinstance(max_drop, str):
        return float(max_drop.rstrip("%")) / 100 * abs(baseline)
    return float(max_drop)


def _verdict(row: dict) -> str:
    worse = -row["delta"] if row["higher_is_better"] else row["delta"]
    significant = row["p_holm"] < row["alpha"]
    if significant and worse > row["allowed_drop"]:
        return "regressed"
    if significant and worse < 0:
        return "improved"
    return "unchanged"
