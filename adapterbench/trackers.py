"""Experiment trackers (TensorBoard, W&B, MLflow, trackio, ...) are accelerate's: this module adds only what it leaves
to us, refusing a tracker name it does not know or whose package is missing (accelerate skips those silently)
before a model loads, the flat values trackers' hyperparameter views take, and `eval`'s table logged through them."""

from __future__ import annotations

import json
from pathlib import Path


def tracker_problem(name: str) -> str | None:
    """Why `name` cannot be used (not a tracker accelerate's log_with knows, or not installed); None if it can."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    known = [kind.value for kind in LoggerType]
    if name not in known:
        return f"{name!r} is not a tracker accelerate knows; choose from {', '.join(known)}"
    if name != "all" and LoggerType(name) not in get_available_trackers():
        return f"tracker {name!r} is not installed (pip install {name})"
    return None


def check_report_to(names: list[str], log_dir: Path | None) -> None:
    """eval's --report-to and --log-dir, checked before any work: each tracker usable, and a writable folder for
    those that write files (TensorBoard, aim...)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    from adapterbench import paths
    from adapterbench.errors import UserError

    for name in names:
        if problem := tracker_problem(name):
            raise UserError(problem, field="--report-to")
    writers = [name for name in names if name == "all" or LOGGER_TYPE_TO_CLASS[name].requires_logging_directory]
    if writers and log_dir is None:
        raise UserError(f"{', '.join(writers)} writes files: name their folder with --log-dir DIR", field="--log-dir")
    if log_dir is not None and not names:
        raise UserError("is where --report-to's trackers write: name them with --report-to", path=log_dir,
                        field="--log-dir")
    if log_dir is not None:
        paths.output_dir(log_dir, field="--log-dir")


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config as `a.b` keys with a number, string or bool each (lists as JSON; None left out): the values
    TensorBoard's and MLflow's hyperparameter views take."""
    values = {}
    for key, value in config.items():
        if isinstance(value, dict):
            values.update(flat_config(value, f"{prefix}{key}."))
        elif value is not None:
            values[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return values


def log_evaluation(evaluation: dict, report_to: list[str], log_dir: Path | None) -> None:
    """Every score of `evaluation` as `TASK/METRIC/LABEL` at step 0 of one tracker run named by its id (TensorBoard:
    LOG_DIR/ID/), so each task's models sit side by side; its suite, base, models and options as the run's config."""
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=report_to, project_dir=log_dir)
    accelerator.init_trackers(evaluation["id"], config=flat_config(
        {"suite": evaluation["suite"]["name"], "base": evaluation["base_ref"],
         "models": [m["label"] for m in evaluation["models"]], **evaluation["config"]}))
    accelerator.log({f"{s['task']}/{s['metric']}/{s['label']}": s["value"] for s in evaluation["scores"]}, step=0)
    finish_trackers(accelerator)


def finish_trackers(accelerator) -> None:
    # not accelerator.end_training(): it also destroys the process group, which the caller (a library user under
    # torchrun, evaluating after training) may still need
    for tracker in accelerator.trackers:
        tracker.finish()
