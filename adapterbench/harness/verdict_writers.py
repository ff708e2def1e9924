"""The gate's verdict written out: strict JSON, Markdown that fits a PR comment, JUnit XML for CI, and a table for
the terminal; each file is written whole or not at all."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Callable

from adapterbench import atomic, terminal
from adapterbench.escape import markdown_code, markdown_text, xml_text
from adapterbench.harness.gate import VERDICT_MARKS


def verdict_json(verdict: dict) -> str:
    """The verdict as strict JSON: non-finite numbers become null."""
    return json.dumps(_json_safe(verdict), indent=2, ensure_ascii=False, allow_nan=False)


def write_verdict_json(verdict: dict, path: str | Path) -> Path:
    """verdict_json, written atomically (tmp file + rename)."""
    return atomic.write_text(path, verdict_json(verdict) + "\n")


def write_verdict_markdown(verdict: dict, path: str | Path) -> Path:
    """format_verdict_markdown, written atomically."""
    return atomic.write_text(path, format_verdict_markdown(verdict))


def format_verdict_markdown(verdict: dict) -> str:
    """A Markdown summary that fits a PR comment: status, the two sides, what the test answers, one table row per
    rule (with its minimum detectable delta), footnotes and warnings."""
    pct = f"{verdict['confidence']:.0%}"
    head = {"passed": "✅ passed", "regressed": "❌ regressed", "incomplete": "⚠️ incomplete"}[verdict["status"]]
    counts = ", ".join(f"{n} {v}" for v, n in verdict["counts"].items() if n)
    lines = [f"### adapterbench gate: {head} ({counts or 'no rules'})", "",
             f"Candidate {_md_side(verdict['candidate'])} vs baseline {_md_side(verdict['baseline'])}. "
             f"A row regresses when the candidate is worse by more than its max drop and the Holm-adjusted p-value "
             f"is below alpha; intervals are {pct} paired intervals; MDE: the smallest true delta the test detects "
             f"with 80 % power. {markdown_text(verdict['answers'])}", "",
             f"| task | metric | baseline | candidate | Δ [{pct} CI] | MDE | p (Holm) | max drop | verdict |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for row in verdict["rows"]:
        arrow = "↑" if row["higher_is_better"] else "↓"
        lines.append("| " + " | ".join([
            markdown_text(row["task"]), f"{markdown_text(row['metric'])} {arrow}", _num(row["baseline"]),
            _num(row["candidate"]), _delta_text(row) + _mark(row), _num(row["mde"]),
            f"{_p(row['p_value'])} ({_p(row['p_holm'])})", markdown_text(_max_drop(row["max_drop"])),
            VERDICT_MARKS[row["verdict"]]]) + " |")
    notes = [f"† {markdown_text(row['task'])}/{markdown_text(row['metric'])}: {markdown_text(row['note'])}"
             for row in verdict["rows"] if _mark(row)]
    if notes or verdict["warnings"]:
        lines += ["", *(f"- {n}" for n in notes), *(f"- {markdown_text(w)}" for w in verdict["warnings"])]
    return "\n".join(lines) + "\n"


def write_junit(verdict: dict, path: str | Path) -> Path:
    """JUnit XML (one testsuite, one testcase per rule row): <failure> for a regression, <error> for a row that
    could not be compared; CI systems (GitHub, GitLab, Jenkins) show them as failed tests."""
    import xml.etree.ElementTree as ET

    rows = verdict["rows"]
    suites = ET.Element("testsuites", name="adapterbench gate")
    suite = ET.SubElement(suites, "testsuite", name="adapterbench gate", tests=str(len(rows)),
                          failures=str(verdict["counts"]["regressed"]), errors=str(verdict["counts"]["missing"]),
                          skipped="0", time="0")
    properties = ET.SubElement(suite, "properties")
    for side in ("baseline", "candidate"):
        refs = ", ".join(run["ref"] for run in verdict[side]["runs"])
        ET.SubElement(properties, "property", name=side,
                      value=xml_text(f"{side_text(verdict[side])} (ref {refs})"))
    for row in rows:
        case = ET.SubElement(suite, "testcase", classname=xml_text(f"adapterbench.gate.{row['task']}"),
                             name=xml_text(f"{row['task']}/{row['metric']}"), time="0")
        summary = xml_text(_row_summary(row))
        if row["verdict"] == "regressed":
            ET.SubElement(case, "failure", message=summary, type="regressed").text = summary
        elif row["verdict"] == "missing":
            note = xml_text(row["note"])
            ET.SubElement(case, "error", message=note, type="missing").text = note
        else:
            ET.SubElement(case, "system-out").text = summary
    ET.indent(suites)
    return atomic.write_text(path, ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")


def format_verdict(verdict: dict) -> str:
    """A plain-text table for the terminal."""
    pct = f"{verdict['confidence']:.0%}"
    table = [["task", "metric", "n", "baseline", "candidate", f"delta [{pct} CI]", "MDE", "p", "p_holm", "max drop",
              "verdict"]]
    for row in verdict["rows"]:
        table.append([row["task"], row["metric"] + (" (higher)" if row["higher_is_better"] else " (lower)"),
                      str(row["n_items"]), _num(row["baseline"]), _num(row["candidate"]), _delta_text(row) + _mark(row),
                      _num(row["mde"]), _p(row["p_value"]), _p(row["p_holm"]), _max_drop(row["max_drop"]),
                      row["verdict"]])
    counts = ", ".join(f"{n} {v}" for v, n in verdict["counts"].items() if n) or "no rules"
    notes = [f"† {row['task']}/{row['metric']}: {row['note']}" for row in verdict["rows"] if _mark(row)]
    return "\n".join([f"baseline:  {side_text(verdict['baseline'])}",
                      f"candidate: {side_text(verdict['candidate'])}", textwrap.fill(verdict["answers"], 116),
                      "", *terminal.table(table), *notes, "",
                      f"gate {verdict['status']}: {counts}"])


def _mark(row: dict) -> str:
    """† where an unchanged row's interval excludes 0: the footnote says why the verdict follows the test."""
    return "†" if row.get("interval_disagrees") else ""


def side_text(side: dict, name: Callable[[dict], str] = lambda run: f"{run['evaluation_id']}:{run['label']}") -> str:
    """A side in one line: its run's `name` (EVAL_ID:LABEL), or "N seeds: ..." naming each."""
    runs = [name(run) for run in side["runs"]]
    return runs[0] if len(runs) == 1 else f"{len(runs)} seeds: " + ", ".join(runs)


def _row_summary(row: dict) -> str:
    if row["verdict"] == "missing":
        return row["note"]
    worse = "higher is better" if row["higher_is_better"] else "lower is better"
    return (f"{row['metric']} ({worse}): baseline {_num(row['baseline'])}, candidate {_num(row['candidate'])}, "
            f"delta {_delta_text(row)}, p {_p(row['p_value'])}, Holm p {_p(row['p_holm'])} (alpha {row['alpha']}), "
            f"max drop {_max_drop(row['max_drop'])}, MDE {_num(row['mde'])}, n {row['n_items']}: {row['verdict']}"
            + (f"; {row['note']}" if row["note"] else ""))


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _delta_text(row: dict) -> str:
    """Delta and interval with the same decimals: four significant digits of the largest of the three."""
    values = (row["delta"], row["ci_low"], row["ci_high"])
    if not all(v is not None and math.isfinite(v) for v in values):
        return "-"
    scale = max(abs(v) for v in values)
    decimals = min(6, max(0, 3 - math.floor(math.log10(scale)))) if scale > 0 else 4
    delta, low, high = (f"{v:+.{decimals}f}" for v in values)
    return f"{delta} [{low}, {high}]"


def _p(value) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _max_drop(value) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _md_side(side: dict) -> str:
    return side_text(side, lambda run: f"`{markdown_code(run['label'])}` ({markdown_text(run['evaluation_id'])})")


def _json_safe(value):
    """`value` with every non-finite float (at any depth) as None: strict JSON has no NaN or Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
