"""The task-type registry: each metric name means one thing across types, metric names alone tell a type and its
headline metric, the suite schema takes each type's own keys (and refuses them on other types), the compiled YAML
is what lm-eval loads; and exact_match, added through the registry alone, works end to end (eval equal to lm-eval's
HFLM and to an independent normalisation, report, gate)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from adapterbench import task_types
from adapterbench.config import TaskConfig, load_suite
from adapterbench.errors import UserError
from adapterbench.task_types.spec import AGGREGATIONS

from tiny_models import SAMPLE, TOPIC_LABELS, every_type_suite

PACKAGE = Path(__file__).resolve().parents[1] / "adapterbench"


def task_of(type_name: str, **extra) -> TaskConfig:
    labels = {"labels": list(TOPIC_LABELS)} if type_name == "classification" else {}
    return TaskConfig(name="t", type=type_name, data="x.jsonl", **labels, **extra)


def test_a_metric_name_means_the_same_in_every_type_that_reports_it():
    seen: dict[str, tuple] = {}
    for kind in task_types.TYPES.values():
        for m in kind.metrics_of(task_of(kind.name)):
            assert m.aggregation in AGGREGATIONS, (kind.name, m)
            declared = (m.aggregation, m.higher_is_better, m.binary, m.detail)
            assert seen.setdefault(m.name, declared) == declared, (kind.name, m.name)
            assert task_types.metric(m.name).higher_is_better == m.higher_is_better
    assert {"acc", "unparseable_rate", "exact_match", "f1_macro", "f1_training", "word_perplexity"} <= set(seen)


def test_metric_names_alone_tell_each_type_and_its_headline_metric():
    for kind in task_types.TYPES.values():
        names = [m.name for m in kind.metrics_of(task_of(kind.name))]
        assert task_types.type_of(names) is kind
        assert task_types.primary_metric(names) == kind.primary[0] and kind.primary[0] in names


@pytest.mark.parametrize("names, primary", [
    (["acc", "rougeL_f1"], "acc"),  # no whole type: the first preferred metric of any type
    (["bleu", "chrf"], "bleu"),
    (["unparseable_rate", "acc"], "acc"),
    (["val_loss"], "val_loss"),
    (["custom", "other"], "custom"),
])
def test_primary_metric_of_partial_or_unknown_names(names, primary):
    assert task_types.primary_metric(names) == primary


def test_an_undeclared_metric_is_a_mean_lower_is_better_only_for_a_loss():
    assert task_types.metric("val_loss").higher_is_better is False
    assert task_types.metric("my_score").higher_is_better is True
    assert task_types.metric("my_score").aggregation == "mean"
    assert task_types.metric("recall_training").aggregation == "per_class"
    assert task_types.metric("recall_training").detail and not task_types.metric("f1_macro").detail


def test_a_key_of_another_type_is_refused_with_its_file_and_line(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: s\ntasks:\n  - name: mc\n    type: multiple_choice\n    data: {SAMPLE}/mc_test.jsonl\n"
                    "    labels: [a, b]\n")
    with pytest.raises(UserError) as err:
        load_suite(path)
    assert "'labels' is read by classification tasks, not by multiple_choice" in str(err.value)
    assert err.value.path == path and err.value.line == 3


def test_shared_keys_are_taken_by_every_type_that_reads_them():
    assert task_of("exact_match", max_new_tokens=8, ignore_case=False).max_new_tokens == 8
    assert task_of("classification", max_new_tokens=3, method="loglikelihood").method == "loglikelihood"
    with pytest.raises(ValueError, match="ignore_patterns"):
        task_of("exact_match", ignore_patterns=["("])


def test_every_compiled_task_loads_in_lm_eval_with_its_declared_metrics(tmp_path):
    from lm_eval.tasks import TaskManager

    from adapterbench.tasks.compile import build_suite

    suite_file = tmp_path / "suite.yaml"
    suite = yaml.safe_load(every_type_suite("all", mc_gen_tokens=4, qa_tokens=4))
    suite["tasks"].append({"name": "facts", "type": "exact_match", "data": f"{SAMPLE}/qa_test.jsonl",
                           "ignore_punctuation": True, "ignore_patterns": ["^answer: *"]})
    suite_file.write_text(yaml.safe_dump(suite))
    config = load_suite(suite_file)
    entries = build_suite(config, tmp_path / "tasks")
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    for task, entry in zip(config.tasks, entries):
        loaded = manager.load([entry["name"]])["tasks"][entry["name"]]
        declared = task_types.task_type(task.type).metrics_of(task)
        assert list(loaded.aggregation()) == [m.name for m in declared] == entry["metrics"]
        assert loaded.higher_is_better() == {m.name: m.higher_is_better for m in declared}
    facts = yaml.safe_load((tmp_path / "tasks" / "facts.yaml").read_text().replace("!function", ""))
    assert facts["metric_list"] == [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                     "ignore_case": True, "ignore_punctuation": True,
                                     "regexes_to_ignore": [r"^\s+|\s+$", "(?i)^answer: *", r"^\s+|\s+$"]}]


@pytest.mark.parametrize("answer, options, right", [
    (" The answer is: 42\n", {"ignore_patterns": ["^the answer is:? *"]}, True),  # pattern meets the first word
    (" The answer is: 42\n", {"ignore_patterns": ["^the answer is:? *"], "ignore_case": False}, False),
    ("PARIS \n", {}, True),
    ("PARIS", {"ignore_case": False}, False),
    ("42.", {"ignore_punctuation": True}, True),
    ("42.", {}, False),
])
def test_exact_match_normalises_as_its_keys_say_through_lm_evals_metric(answer, options, right):
    from lm_eval.api.metrics import exact_match_hf_evaluate

    reference = {"PARIS \n": "Paris", "PARIS": "Paris"}.get(answer, "42")
    [declared] = task_types.task_type("exact_match").metrics_of(task_of("exact_match", **options))
    score = exact_match_hf_evaluate(predictions=[answer], references=[reference], **dict(declared.lm_eval_kwargs))
    assert score["exact_match"] == float(right)


def test_task_limit_compiles_only_the_first_items(tmp_path):
    from adapterbench.tasks.compile import build_suite

    path = tmp_path / "suite.yaml"
    path.write_text(f"name: s\ntasks:\n  - {{name: qa, type: generation, data: {SAMPLE}/qa_test.jsonl, limit: 3}}\n")
    entries = build_suite(load_suite(path), tmp_path / "tasks")
    written = [json.loads(line)["id"] for line in (tmp_path / "tasks" / "qa.jsonl").read_text().splitlines()]
    first = [json.loads(line)["id"] for line in (SAMPLE / "qa_test.jsonl").read_text().splitlines()[:3]]
    assert entries[0]["docs"] == 3 and written == first


# Each layer imports only from layers before it; a module's layer is its first matching prefix.
LAYERS = [
    ("adapterbench.errors", "adapterbench.untrusted", "adapterbench.paths", "adapterbench.terminal",
     "adapterbench.escape", "adapterbench.atomic", "adapterbench.digest", "adapterbench.record_types",
     "adapterbench.collector"),
    ("adapterbench.task_types",),
    ("adapterbench.config", "adapterbench.datafiles", "adapterbench.trackers"),
    ("adapterbench.tasks",),
    ("adapterbench.adapters", "adapterbench.provenance"),
    ("adapterbench.harness",),
    ("adapterbench.training",),
    ("adapterbench.reports", "adapterbench.chat", "adapterbench.demo"),
    ("adapterbench.cli", "adapterbench.__main__"),
]


def _layer(module: str) -> int | None:
    return next((i for i, prefixes in enumerate(LAYERS)
                 if any(module == p or module.startswith(p + ".") for p in prefixes)), None)


def test_no_import_runs_up_a_layer():
    upward, unplaced = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == "adapterbench":
            continue
        own = _layer(module)
        if own is None:
            unplaced.append(module)
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "adapterbench":  # from adapterbench import data
                names = [f"adapterbench.{a.name}" for a in node.names]
            else:
                names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.startswith("adapterbench.") and (_layer(name) or 0) > own:
                    upward.append(f"{module} imports {name}")
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"
    assert not upward, upward


# --- exact_match end to end on a tiny model -----------------------------------------------------------------------

LIMIT = 6


@pytest.fixture(scope="module")
def exact_match_run(tiny_model_dir, tmp_path_factory):
    """The tiny model's greedy answers to six questions, then two exact_match tasks whose references are those
    answers with their case swapped and whitespace around (even items) or another text (odd items)."""
    from adapterbench.harness.evaluate import evaluate

    root = tmp_path_factory.mktemp("exact_match")
    first = root / "generation.yaml"
    first.write_text(f"name: g\ntasks:\n  - {{name: qa, type: generation, data: {SAMPLE}/qa_test.jsonl, "
                     "max_new_tokens: 6}\n")
    answers = {s["doc_id"]: (s["prompt"], s["prediction"])
               for s in evaluate(first, base=str(tiny_model_dir), limit=LIMIT, dtype="fp32", save=False)["samples"]}
    records = [json.loads(line) for line in (SAMPLE / "qa_test.jsonl").read_text().splitlines()[:LIMIT]]
    for i, record in enumerate(records):
        record["output"] = f"  {answers[record['id']][1].swapcase()}\n" if i % 2 == 0 else "no such answer"
    data = root / "facts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    suite = root / "suite.yaml"
    suite.write_text(f"name: em\ntasks:\n  - {{name: em_case, type: exact_match, data: {data}, max_new_tokens: 6}}\n"
                     f"  - {{name: em_strict, type: exact_match, data: {data}, max_new_tokens: 6, "
                     "ignore_case: false}\n")
    store = root / "store.sqlite"
    evaluation = evaluate(suite, base=str(tiny_model_dir), dtype="fp32", store=store)
    return {"suite": suite, "store": store, "evaluation": evaluation, "records": records,
            "predictions": [answers[r["id"]][1] for r in records]}


@pytest.mark.slow
def test_exact_match_scores_equal_an_independent_normalisation(exact_match_run):
    predictions, records = exact_match_run["predictions"], exact_match_run["records"]
    assert any(p != p.swapcase() for p in predictions[::2]), "the answers need a cased letter to tell the tasks apart"
    expected = {"em_case": [float(p.strip().lower() == r["output"].strip().lower())
                            for p, r in zip(predictions, records)],
                "em_strict": [float(p.strip() == r["output"].strip()) for p, r in zip(predictions, records)]}
    evaluation = exact_match_run["evaluation"]
    for task, values in expected.items():
        by_id = {s["doc_id"]: s["metrics"]["exact_match"] for s in evaluation["samples"] if s["task"] == task}
        assert [by_id[r["id"]] for r in records] == values, task
        score = next(s for s in evaluation["scores"] if s["task"] == task and s["metric"] == "exact_match")
        assert score["value"] == pytest.approx(sum(values) / len(values))
    assert expected["em_case"][::2] == [1.0] * 3 and expected["em_case"] != expected["em_strict"]


@pytest.mark.slow
def test_exact_match_equals_lm_eval_hflm(exact_match_run, tiny_model_dir, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from adapterbench.tasks.compile import build_suite

    build_suite(load_suite(exact_match_run["suite"]), tmp_path / "tasks")
    reference = simple_evaluate(model="hf", model_args=f"pretrained={tiny_model_dir},dtype=float32",
                                tasks=["em_case", "em_strict"], device="cpu", apply_chat_template=True,
                                task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
                                batch_size=8, bootstrap_iters=0)
    ours = {(s["task"], s["metric"]): s["value"] for s in exact_match_run["evaluation"]["scores"]}
    for task in ("em_case", "em_strict"):
        assert ours[(task, "exact_match")] == reference["results"][task]["exact_match,none"]


@pytest.mark.slow
def test_exact_match_reaches_the_report_and_the_gate(exact_match_run, tmp_path):
    from adapterbench.harness.gate import run_gate
    from adapterbench.reports.context import build_context

    evaluation = exact_match_run["evaluation"]
    context = build_context([evaluation])
    task = next(t for t in context["tasks"] if t["name"] == "em_case")
    assert task["type"] == "exact_match" and task["answers"]["score_metric"] == "exact_match"
    assert task["answers"]["binary_score"] and task["rouge"] is None and task["classification"] is None
    assert any(r["task"] == "em_case" and r["metric"] == "exact_match" and not r["detail"] for r in context["table"])
    ref = f"{evaluation['id']}:base"
    verdict = run_gate(ref, ref, store=exact_match_run["store"])
    assert {(r["task"], r["metric"], r["test"], r["verdict"]) for r in verdict["rows"]} == {
        ("em_case", "exact_match", "mcnemar", "unchanged"), ("em_strict", "exact_match", "mcnemar", "unchanged")}
    assert verdict["status"] == "passed"
