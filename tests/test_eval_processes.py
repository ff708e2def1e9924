"""Evaluation on several processes (torchrun over gloo on CPU): the processes share each task's documents, the
main one alone writes the store, and every score equals the one-process run's."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_adapter_types import random_adapter
from test_architectures import SUITE


@pytest.mark.slow
def test_two_processes_score_every_task_type_as_one_does(tiny_model_dir, tmp_path):
    from adapterbench.harness import database
    from adapterbench.harness.evaluate import evaluate, results_table

    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    adapter = random_adapter(tiny_model_dir, tmp_path / "lora", "lora")
    args = ["eval", str(suite), "--base", str(tiny_model_dir), "--adapter", f"lora={adapter}", "--limit", "5",
            "--dtype", "fp32", "--store", str(tmp_path / "two.sqlite"), "--json"]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    launch = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port),
              "-m", "adapterbench", *args]
    done = subprocess.run(launch, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout[done.stdout.index('{\n  "eval_id"'):])  # printed once, by the main process
    with database.connect(tmp_path / "two.sqlite") as conn:
        saved = database.list_evaluations(conn, kind=None)
        assert len(saved) == 1
        two = database.load_evaluation(conn, printed["eval_id"], with_samples=True)
    assert two["config"]["processes"] == 2

    one = evaluate(suite, base=str(tiny_model_dir), adapters={"lora": str(adapter)}, limit=5, dtype="fp32",
                   save=False)
    assert printed["results"].keys() == {"base", "lora"}
    for label, tasks in results_table(one).items():
        for task, metrics in tasks.items():
            for metric, value in metrics.items():
                theirs = printed["results"][label][task][metric]
                if "perplexity" in metric:  # exp of a mean log-likelihood: compare what is computed
                    value, theirs = math.log(value), math.log(theirs)
                assert theirs == pytest.approx(value, rel=1e-6, abs=1e-9), (label, task, metric)
    stderr = {(r["label"], r["task"], r["metric"]): r["stderr"] for r in one["scores"]}
    for row in two["scores"]:  # bootstrap resamples see the items in the same order
        if "perplexity" not in row["metric"] and stderr[row["label"], row["task"], row["metric"]] is not None:
            assert row["stderr"] == pytest.approx(stderr[row["label"], row["task"], row["metric"]], rel=1e-5,
                                                  abs=1e-9), row
    key = lambda s: (s["label"], s["task"], s["doc_id"])  # noqa: E731
    assert [key(s) for s in two["samples"]] == [key(s) for s in one["samples"]]
    for theirs, ours in zip(two["samples"], one["samples"]):
        if theirs["task"] == "ppl":  # a log-likelihood summed in another batch: equal to fp32 rounding on some CPUs
            assert float(theirs["prediction"]) == pytest.approx(float(ours["prediction"]), rel=1e-6), key(ours)
        else:  # choices and greedy answers: the same text
            assert theirs["prediction"] == ours["prediction"], key(ours)
