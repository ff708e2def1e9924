"""Experiment trackers through accelerate, checked with TensorBoard offline: the event files TensorBoard's own reader
loads hold every value of metrics.jsonl at its step (a resumed run's too, once per step), `eval --report-to` logs its
table, and a tracker that is unknown or not installed is refused before any model loads."""

from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pytest

from adapterbench.cli import main
from adapterbench.errors import UserError
from adapterbench.training import train
from test_harness import random_lora
from test_training import SAMPLE, config, metrics_lines

SUITE = f"name: s\ntasks:\n  - {{name: mc, type: multiple_choice, data: {SAMPLE}/data/mc_test.jsonl}}\n"
NOT_INSTALLED = "wandb"  # not in constraints.txt: the environment `make setup` builds has no W&B


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)...]} as TensorBoard shows them (its reader, orphaned steps of a killed run purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as tracker scalars: every value at its record's step, in float32 as TensorBoard keeps them."""
    table: dict[str, list[tuple[int, float]]] = {}
    for record in metrics_lines(run_dir):
        for key, value in record.items():
            if key not in ("kind", "step", "tokens_seen"):
                table.setdefault(key, []).append((record["step"], float(np.float32(value))))
    return table


def tracked_config(tiny_model_dir, tmp_path, name="run", **overrides):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    return config(tiny_model_dir, tmp_path, name, **{"eval.every": 3, "eval.suite": str(suite), "eval.limit": 2,
                                                     "report_to": ["tensorboard"], **overrides})


def test_tensorboard_holds_every_value_of_metrics_jsonl_at_its_step(tiny_model_dir, tmp_path):
    train(tracked_config(tiny_model_dir, tmp_path), store=tmp_path / "s.sqlite", show_progress=False)
    run_dir = tmp_path / "run"
    logged = scalars(run_dir / "logs" / "run")
    want = expected(run_dir)
    assert {"train_loss", "lr", "grad_norm", "val_loss", "mc/acc", "mc/acc_norm"} <= want.keys()
    assert [step for step, _ in want["val_loss"]] == [0, 3, 6] and len(want["train_loss"]) == 6
    speeds = logged.pop("tokens_per_second")  # tracked only: a rerun would not repeat it
    assert [step for step, _ in speeds] == [step for step, _ in want["train_loss"]]
    assert all(value > 0 for _, value in speeds)
    assert logged == want


def test_a_resumed_run_shows_each_step_once_with_the_values_of_its_metrics_jsonl(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    import tensorboard.summary.writer.event_file_writer as event_file_writer

    import adapterbench.training.loop as loop

    real_log, real_time = loop.log, event_file_writer.time.time

    def log_then_die(path, record, *args, **kwargs):
        real_log(path, record, *args, **kwargs)
        if record["kind"] == "train" and record["step"] == 5:  # steps 4 and 5 logged after the checkpoint at 3
            raise KeyboardInterrupt

    cut = tracked_config(tiny_model_dir, tmp_path, "cut", max_steps=8)
    monkeypatch.setattr(loop, "log", log_then_die)
    # the killed run's event file named a minute earlier, as a real restart would find it (TensorBoard reads a
    # folder's files in name order, and names start with the second they were opened in)
    monkeypatch.setattr(event_file_writer.time, "time", lambda: real_time() - 60)
    with pytest.raises(KeyboardInterrupt):
        train(cut, store=tmp_path / "s.sqlite", show_progress=False)
    monkeypatch.undo()
    assert [r["step"] for r in metrics_lines(tmp_path / "cut") if r["kind"] == "train"] == [1, 2, 3, 4, 5]
    train(cut, resume=True, store=tmp_path / "s.sqlite", show_progress=False)

    logged = scalars(tmp_path / "cut" / "logs" / "cut")
    assert [step for step, _ in logged.pop("tokens_per_second")] == list(range(1, 9))
    assert logged == expected(tmp_path / "cut")


@pytest.mark.parametrize("name, says", [(NOT_INSTALLED, f"not installed (pip install {NOT_INSTALLED})"),
                                        ("tensorbord", "not a tracker accelerate knows")])
def test_an_unusable_tracker_is_refused_naming_the_line_before_the_model_loads(tiny_model_dir, tmp_path,
                                                                                 monkeypatch, name, says):
    import adapterbench.adapters.models as models
    from adapterbench.config import load_train

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    path = tmp_path / "train.yaml"
    path.write_text(f"base_model: {tiny_model_dir}\ndata: {{format: text, train: {SAMPLE}/data/notes_train.jsonl}}\n"
                    f"max_steps: 1\nout: {tmp_path}/run\nreport_to: [tensorboard, {name}]\n")
    with pytest.raises(UserError) as error:
        train(load_train(path), store=tmp_path / "s.sqlite", show_progress=False)
    assert str(error.value).startswith(f"{path}:5: field 'report_to[1]': ") and says in str(error.value)
    assert not (tmp_path / "run").exists()


def test_eval_report_to_logs_each_score_of_its_table_per_model(tiny_model_dir, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    adapter = random_lora(tiny_model_dir, tmp_path / "lora", seed=1)
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(suite), "--base", str(tiny_model_dir), "--adapter", f"mine={adapter}", "--limit", "2",
              "--dtype", "fp32", "--store", str(tmp_path / "s.sqlite"), "--json", "--report-to", "tensorboard",
              "--log-dir", str(tmp_path / "logs")])
    assert exit_.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert scalars(tmp_path / "logs" / printed["eval_id"]) == {
        f"mc/{metric}/{label}": [(0, float(np.float32(value)))]
        for label in ("base", "mine") for metric, value in printed["results"][label]["mc"].items()}
