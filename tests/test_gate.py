"""`adapterbench gate` on synthetic evaluations in a temporary store: exit codes on a constructed regression,
improvement and noise, unmatched items reported, bad rules refused before anything is written, and the verdict's
JSON, Markdown and JUnit XML forms."""

from __future__ import annotations

import json
import random
import re
import shutil
import xml.etree.ElementTree as ET

import pytest

from adapterbench.cli import main
from adapterbench.harness import database
from adapterbench.harness.gate import run_gate
from adapterbench.harness.verdict_writers import format_verdict_markdown, write_junit

N = 120


def _acc(p: float, seed: int, n: int = N) -> list[dict]:
    rng = random.Random(seed)
    return [{"acc": float(rng.random() < p)} for _ in range(n)]


def _rouge(mean: float, seed: int, n: int = N) -> list[dict]:
    rng = random.Random(seed)
    return [{"rougeL_f1": min(1.0, max(0.0, rng.gauss(mean, 0.1))), "bleu": ["the cat sat", "the cat sat down"]}
            for _ in range(n)]


def _save(path, created_at: str, models: dict[str, dict[str, list[dict]]]) -> str:
    """models: {label: {task: per-item metrics}}; item i of a task has doc_hash <task>-<i> on every side."""
    samples = [{"label": label, "task": task, "doc_id": str(i), "doc_hash": f"{task}-{i}", "metrics": metrics}
               for label, tasks in models.items() for task, items in tasks.items() for i, metrics in enumerate(items)
               if metrics is not None]
    evaluation = {"suite": {"name": "synthetic"}, "base_ref": "default", "created_at": created_at,
                  "models": [{"label": label, "role": "base" if label == "base" else "adapter"} for label in models],
                  "scores": [], "samples": samples}
    conn = database.connect(path)
    try:
        return database.save_evaluation(conn, evaluation)
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path):
    """A store with v1 (the baseline) in one evaluation and v2_* candidates in a later one."""
    path = tmp_path / "store.sqlite"
    base_acc, base_qa = _acc(0.7, 1), _rouge(0.4, 2)
    noisy = [dict(m) for m in base_acc]
    for i in (3, 8):  # two items flip: 1 correct -> wrong, 1 wrong -> correct, 1 more wrong
        noisy[i] = {"acc": 1.0 - noisy[i]["acc"]}
    noisy[11] = {"acc": 0.0}
    _save(path, "2026-01-01T00:00:00+00:00", {"v1": {"mc": base_acc, "qa": base_qa}})
    _save(path, "2026-01-02T00:00:00+00:00", {
        "v2_worse": {"mc": [{"acc": m["acc"] * (i % 3 != 0)} for i, m in enumerate(base_acc)],  # a third wrong
                     "qa": base_qa},
        "v2_worse_again": {"mc": [{"acc": m["acc"] * (i % 3 != 1)} for i, m in enumerate(base_acc)],  # another third
                           "qa": base_qa},
        "v2_better": {"mc": [{"acc": 1.0 if i % 2 else m["acc"]} for i, m in enumerate(base_acc)],
                      "qa": [{**m, "rougeL_f1": min(1.0, m["rougeL_f1"] + 0.1)} for m in base_qa]},
        "v2_noisy": {"mc": noisy, "qa": base_qa},
        "v2_partial": {"mc": base_acc[: N // 2], "other": _acc(0.5, 3)},
    })
    return path


def gate(*args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gate", *map(str, args)])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_constructed_regression_exits_1_and_names_the_row(db, capsys):
    code, out, _ = gate("--baseline", "v1", "--candidate", "v2_worse", "--store", db, capsys=capsys)
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("mc "))
    assert line.split()[-1] == "regressed"
    assert out.rstrip().endswith("gate regressed: 1 unchanged, 1 regressed")


def test_constructed_improvement_exits_0_and_says_improved(db, capsys):
    code, out, _ = gate("--baseline", "v1", "--candidate", "v2_better", "--store", db, "--json", capsys=capsys)
    assert code == 0
    verdict = json.loads(out)
    assert verdict["status"] == "passed" and verdict["passed"] is True
    rows = {(r["task"], r["metric"]): r for r in verdict["rows"]}
    assert set(rows) == {("mc", "acc"), ("qa", "rougeL_f1")}  # default rules: each task's primary metric
    assert rows["mc", "acc"]["verdict"] == "improved" and rows["mc", "acc"]["test"] == "mcnemar"
    assert rows["qa", "rougeL_f1"]["verdict"] == "improved" and rows["qa", "rougeL_f1"]["test"] == "permutation"
    for row in rows.values():
        assert row["ci_low"] <= row["delta"] <= row["ci_high"] and row["p_holm"] >= row["p_value"]


def test_small_noise_is_unchanged_and_passes(db, capsys):
    code, out, _ = gate("--baseline", "v1", "--candidate", "v2_noisy", "--store", db, "--json", capsys=capsys)
    verdict = json.loads(out)
    row = next(r for r in verdict["rows"] if r["task"] == "mc")
    assert row["delta"] < 0 and row["verdict"] == "unchanged"
    assert code == 0


def test_a_significant_drop_within_max_drop_passes(db, tmp_path):
    rules = tmp_path / "gate.yaml"
    rules.write_text("rules:\n  - {task: mc, max_drop: 0.3}\n  - {task: qa, metric: rougeL_f1, max_drop: '1%'}\n")
    verdict = run_gate("v1", "v2_worse", store=db, rules=rules, warn=lambda message: None)
    assert [r["verdict"] for r in verdict["rows"]] == ["unchanged", "unchanged"]
    assert verdict["rows"][0]["allowed_drop"] == 0.3 and verdict["rows"][0]["delta"] < -0.2
    assert verdict["rows"][1]["allowed_drop"] == pytest.approx(0.01 * verdict["rows"][1]["baseline"])
    rules.write_text("max_drop: '10%'\nrules:\n  - {task: mc}\n")
    assert run_gate("v1", "v2_worse", store=db, rules=rules, warn=lambda m: None)["status"] == "regressed"


def test_unmatched_items_are_reported_in_the_verdict_and_on_stderr(db, capsys):
    code, out, err = gate("--baseline", "v1", "--candidate", "v2_partial", "--store", db, "--json", capsys=capsys)
    verdict = json.loads(out)
    assert "task mc: the two sides were not scored on the same items: 60 shared, 60 only in the baseline" in err
    assert verdict["unmatched"]["mc"] == {"only_baseline": 60, "only_candidate": 0, "shared": 60}
    rows = {r["task"]: r for r in verdict["rows"]}
    assert rows["mc"]["n_items"] == 60 and "60 only in the baseline" in rows["mc"]["note"]
    # qa: the candidate never answered it, so the gate cannot vouch for it: incomplete, exit 2
    assert rows["qa"]["verdict"] == "missing" and "share no item" in rows["qa"]["note"]
    assert "qa/rougeL_f1: the baseline and the candidate share no item" in err
    assert verdict["status"] == "incomplete" and code == 2


def test_writes_junit_with_a_failure_for_the_regressed_row_and_markdown_and_json(db, tmp_path, capsys):
    out_dir = tmp_path / "gate-out"
    code, _, _ = gate("--baseline", "v1", "--candidate", "v2_worse", "--store", db, "--out", out_dir,
                      "--junit", tmp_path / "junit.xml", "--markdown", tmp_path / "gate.md", capsys=capsys)
    assert code == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["junit.xml", "verdict.json", "verdict.md"]
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["mc/acc"].find("failure") is not None
    assert "regressed" in cases["mc/acc"].find("failure").get("message")
    assert cases["qa/rougeL_f1"].find("failure") is None
    assert (out_dir / "junit.xml").read_text() == (tmp_path / "junit.xml").read_text()
    assert json.loads((out_dir / "verdict.json").read_text())["status"] == "regressed"
    markdown = (tmp_path / "gate.md").read_text()
    assert markdown.startswith("### adapterbench gate: ❌ regressed")
    assert "| mc | acc ↑ |" in markdown and "❌ regressed |" in markdown


def test_junit_and_markdown_escape_hostile_names(db, tmp_path):
    verdict = run_gate("v1", "v2_worse", store=db, warn=lambda m: None)
    verdict["rows"][0]["task"] = 'a<b>&"c"|d\x01e'
    verdict["candidate"]["label"] = "x`y"
    write_junit(verdict, tmp_path / "j.xml")
    names = [case.get("name") for case in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")]
    assert names[0] == 'a<b>&"c"|d[U+0001]e/acc'  # a control character shown, not acting (untrusted.visible)
    row = next(line for line in format_verdict_markdown(verdict).splitlines() if line.startswith("| a"))
    assert row.startswith(r'| a&lt;b&gt;&amp;"c"\|d\[U+0001\]e | acc')  # escape.markdown_text: no tag gets through
    assert row.count(" | ") == 8  # the pipe in the name did not open a new cell


def test_bad_rules_file_exits_2_with_file_and_line_and_writes_nothing(db, tmp_path, capsys):
    rules = tmp_path / "gate.yaml"
    rules.write_text("alpha: 0.05\nrules:\n  - task: mc\n    max_drop: lots\n")
    out_dir = tmp_path / "gate-out"
    code, out, err = gate("--baseline", "v1", "--candidate", "v2_worse", "--store", db, "--rules", rules,
                          "--out", out_dir, "--junit", tmp_path / "j.xml", capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {rules}:4: field 'rules[0].max_drop': max_drop is a number")
    assert not out_dir.exists() and not (tmp_path / "j.xml").exists()


def test_gate_config_defaults_inheritance_and_refusals(tmp_path):
    from adapterbench.config import GateConfig, load_gate
    from adapterbench.errors import UserError

    assert (GateConfig().alpha, GateConfig().max_drop, GateConfig().rules) == (0.05, 0.0, [])
    path = tmp_path / "ci" / "gate.yaml"
    path.parent.mkdir()
    path.write_text("suite: ../suite.yaml\nmax_drop: 2%\nrules:\n  - {task: qa}\n  - {task: mc, max_drop: 0.5}\n")
    config = load_gate(path)
    assert config.suite == (tmp_path / "suite.yaml").resolve() and config.max_drop == "2%"
    assert [(r.task, r.metric, r.max_drop) for r in config.rules] == [("qa", None, None), ("mc", None, 0.5)]
    for text, message in (("rules:\n  - {task: qa}\n  - {task: qa}\n", "repeated: qa/primary"),
                          ("max_drop: -1\n", ":1: field 'max_drop': max_drop must be >= 0"),
                          ("alpha: 1.5\n", ":1: field 'alpha': Input should be less than 1"),
                          ("rules:\n  - {task: qa, max_dorp: 1}\n", "did you mean 'max_drop'?")):
        path.write_text(text)
        with pytest.raises(UserError, match=re.escape(message)):
            load_gate(path)


def test_rule_naming_an_unknown_task_or_metric_suggests_the_right_one(db, tmp_path, capsys):
    rules = tmp_path / "gate.yaml"
    rules.write_text("rules:\n  - {task: qa, metric: blue}\n")
    code, _, err = gate("--baseline", "v1", "--candidate", "v2_worse", "--store", db, "--rules", rules,
                        capsys=capsys)
    assert code == 2 and ":2: field 'rules[0].metric': task 'qa' has no metric 'blue'; did you mean 'bleu'?" in err
    rules.write_text("rules:\n  - {task: mcc}\n")
    code, _, err = gate("--baseline", "v1", "--candidate", "v2_worse", "--store", db, "--rules", rules,
                        capsys=capsys)
    assert code == 2
    assert ":2: field 'rules[0].task': no task 'mcc' in the baseline or the candidate; did you mean 'mc'?" in err


def test_refs_take_eval_id_and_label_and_unknown_labels_are_errors(db, capsys):
    conn = database.connect(db)
    eval_id = database.list_evaluations(conn)[-1]["id"]  # the older one: v1's
    conn.close()
    verdict = run_gate(f"{eval_id}:v1", "v2_better", store=db, warn=lambda m: None)
    assert verdict["baseline"]["evaluation_id"] == eval_id and verdict["status"] == "passed"
    code, _, err = gate("--baseline", "v0", "--candidate", "v2_better", "--store", db, capsys=capsys)
    assert code == 2 and "field '--baseline': no evaluation has a model labelled 'v0'" in err


def test_an_adapter_dir_ref_needs_a_suite_in_the_rules(db, tmp_path, capsys):
    adapter = tmp_path / "runs" / "new" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    code, _, err = gate("--baseline", "v1", "--candidate", adapter, "--store", db, capsys=capsys)
    assert code == 2 and "an adapter dir is scored before the gate, and that needs a suite" in err


def test_the_same_model_on_both_sides_is_unchanged_and_said(db):
    messages = []
    verdict = run_gate("v1", "v1", store=db, warn=messages.append)
    assert {r["verdict"] for r in verdict["rows"]} == {"unchanged"} and verdict["exit_code"] == 0
    assert all(r["delta"] == 0 and r["p_value"] == 1.0 for r in verdict["rows"])
    assert messages == [f"baseline and candidate are the same model ({verdict['baseline']['evaluation_id']}:v1)"]


def test_adapter_dirs_are_scored_on_the_rules_suite_then_gated(tiny_model_dir, tmp_path, capsys):
    from test_harness import SAMPLE, random_lora

    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: small\ntasks:\n  - {{name: mc, type: multiple_choice, data: {SAMPLE}/mc_test.jsonl}}\n")
    rules = tmp_path / "gate.yaml"
    rules.write_text(f"suite: suite.yaml\nbase: {tiny_model_dir}\niters: 200\n")
    old = random_lora(tiny_model_dir, tmp_path / "old", seed=1)
    new = shutil.copytree(old, tmp_path / "new")  # the same weights in another dir: the same greedy answers
    db = tmp_path / "store.sqlite"
    code, out, _ = gate("--baseline", old, "--candidate", new, "--rules", rules, "--store", db, "--json",
                        capsys=capsys)
    verdict = json.loads(out)
    assert (code, verdict["exit_code"], verdict["status"]) == (0, 0, "passed")
    assert [(r["verdict"], r["delta"], r["p_value"]) for r in verdict["rows"]] == [("unchanged", 0.0, 1.0)]
    assert verdict["baseline"]["label"] == "old" and verdict["candidate"]["label"] == "new"
    assert verdict["baseline"]["evaluation_id"] == verdict["candidate"]["evaluation_id"]  # one session, one base
    assert [(r["task"], r["metric"], r["n_items"]) for r in verdict["rows"]] == [("mc", "acc", 35)]
    conn = database.connect(db)
    try:
        assert database.resolve_model_ref(conn, "new") == (verdict["candidate"]["evaluation_id"], "new")
    finally:
        conn.close()


def _seed_evaluations(rng, n: int, seeds: int, prefix: str) -> list[dict]:
    """`seeds` runs of one training config: each seed moves every item a little the same way (its accuracy and
    ROUGE-L spread across seeds: about 3 and 1 points), and answers each item with its own noise."""
    import numpy as np

    logit, level = _ITEMS
    runs = []
    for s in range(seeds):
        correct = rng.random(n) < 1 / (1 + np.exp(-(logit[:n] + rng.normal(0, 0.15))))
        rouge = np.clip(level[:n] + rng.normal(0, 0.01) + rng.normal(0, 0.05, n), 0, 1)
        samples = [{"label": "m", "task": "t", "doc_id": str(i), "doc_hash": f"h{i}",
                    "metrics": {"acc": float(c), "rougeL_f1": float(r)}}
                   for i, (c, r) in enumerate(zip(correct, rouge))]
        runs.append({"id": f"{prefix}{s}", "models": [{"label": "m"}], "samples": samples})
    return runs


def _items_of_the_test_set():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.normal(0.5, 1.5, 1000), rng.uniform(0.1, 0.6, 1000)


_ITEMS = _items_of_the_test_set()


def test_two_seeds_per_side_of_one_config_pass_at_the_nominal_rate_where_one_seed_per_side_does_not(monkeypatch):
    import numpy as np
    from scipy.stats import binom

    from adapterbench.config import GateConfig

    rules = GateConfig(rules=[{"task": "t", "metric": "acc"}, {"task": "t", "metric": "rougeL_f1"}], iters=199)
    sims, n = 150, 1000
    rng = np.random.default_rng(1)
    significant = {"checkpoints": 0, "recipes": 0}
    for _ in range(sims):
        runs = {e["id"]: e for e in _seed_evaluations(rng, n, 2, "a") + _seed_evaluations(rng, n, 2, "b")}
        monkeypatch.setattr("adapterbench.harness.gate.load_sides", lambda refs, *args: {
            side: [(runs[ref], "m") for ref in listed] for side, listed in refs.items()})
        for question, base, cand in (("checkpoints", "a0", "b0"), ("recipes", ["a0", "a1"], ["b0", "b1"])):
            verdict = run_gate(base, cand, rules=rules, warn=lambda m: None)
            assert verdict["question"] == question
            # a verdict other than unchanged in either direction: a false alarm, as these are one config
            significant[question] += any(r["verdict"] != "unchanged" for r in verdict["rows"])
    rates = {q: count / sims for q, count in significant.items()}
    print("same config, seed as noise: share of gates with a significant row:", rates)
    allowed = binom.ppf(0.999, sims, 0.05)
    assert significant["recipes"] <= allowed
    assert significant["checkpoints"] > allowed  # the checkpoint question calls seed noise a difference


def test_several_seeds_per_side_through_the_cli_say_which_question_they_answer(db, capsys):
    code, out, _ = gate("--baseline", "v1", "--baseline", "v2_noisy", "--candidate", "v2_better", "--store", db,
                        capsys=capsys)
    lines = out.splitlines()
    assert lines[0].startswith("baseline:  2 seeds: ") and lines[1].startswith("candidate: ev-")
    assert lines[2].startswith("Tests the recipes: 2 baseline seeds against 1 candidate seed")
    # qa's ROUGE-L is 0.1 up on every item of the one candidate seed, while the two baseline seeds agree on it
    assert code == 0 and out.rstrip().endswith("gate passed: 1 improved, 1 unchanged")
    assert {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith(("mc ", "qa "))} == {
        "mc": "unchanged", "qa": "improved"}
    # two candidate seeds that each lose a third of the baseline's right answers: seed noise cannot explain that
    code, out, _ = gate("--baseline", "v1", "--baseline", "v2_noisy", "--candidate", "v2_worse", "--candidate",
                        "v2_worse_again", "--store", db, capsys=capsys)
    assert out.splitlines()[2].startswith("Tests the recipes: 2 baseline seeds against 2 candidate seeds")
    row = next(line for line in out.splitlines() if line.startswith("mc "))
    assert row.split()[-1] == "regressed"
    assert code == 1 and out.rstrip().endswith("gate regressed: 1 unchanged, 1 regressed")
    code, out, _ = gate("--baseline", "v1", "--candidate", "v2_better", "--store", db, "--json", capsys=capsys)
    verdict = json.loads(out)
    assert verdict["question"] == "checkpoints" and "cannot see seed-to-seed noise" in verdict["answers"]
    assert all(r["mde"] > 0 for r in verdict["rows"])


def test_four_changed_items_of_a_hundred_cannot_regress(tmp_path):
    # The audit's case: the bootstrap called this "regressed" (p_holm 0.041); four sign flips reach at best 2/16.
    path = tmp_path / "store.sqlite"
    _save(path, "2026-01-01T00:00:00+00:00", {
        "old": {"qa": [{"rougeL_f1": 0.30} for _ in range(100)]},
        "new": {"qa": [{"rougeL_f1": 0.25 if i < 4 else 0.30} for i in range(100)]}})
    (row,) = run_gate("old", "new", store=path, warn=lambda m: None)["rows"]
    assert (row["test"], row["method"], row["p_value"], row["verdict"]) == ("permutation", "exact", 0.125, "unchanged")
    assert row["mde"] > abs(row["delta"])
