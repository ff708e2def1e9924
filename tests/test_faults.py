"""kill -9 during training and evaluation: the process dies at a chosen point (inside an atomic write, mid-step,
inside a store transaction, while scoring), skipping every cleanup. The next run leaves no temporaries and no
duplicate or partial store rows, and a training run resumes (or starts over) to the adapter an uninterrupted run
makes. The fast cases fork the test process (no interpreter start-up); the slow ones kill `adapterbench train`
subprocesses at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
import torch

from adapterbench.adapters.identity import adapter_identity
from adapterbench.cli import main
from adapterbench.harness import database

from test_harness import random_lora
from test_training import adapter_tensors, config, curve_steps, metrics_lines

SAMPLE = Path(__file__).resolve().parents[1] / "adapterbench" / "sample" / "data"
TRAIN = {"max_steps": 6, "checkpoint.every": 2, "checkpoint.keep": 2, "eval.every": 2}


def kill_self(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def arm(site: str, nth: int) -> None:
    """Make this process SIGKILL itself at the nth call of `site`."""
    import adapterbench.harness.evaluate as evaluate
    import adapterbench.training.checkpoints as checkpoints
    import adapterbench.training.loop as loop

    owners = {"replace": (os, "replace"),  # inside atomic_file / atomic_dir: the temporary is complete
              "torch.save": (checkpoints.torch, "save"),  # a checkpoint's temporary dir half written
              "store row": (database, "_json"),  # inside save_evaluation's open transaction
              "log": (loop, "log"),  # after a line of metrics.jsonl
              "step": (loop, "split_by_tokens"),  # mid-step, before its backward
              "scoring": (evaluate, "_samples")}  # between two tasks of an evaluation
    owner, name = owners[site]
    real, calls = getattr(owner, name), {"n": 0}

    def counted(*args, **kwargs):
        # os.replace is global: count adapterbench's own renames only (the datasets library renames its cache
        # files too, more or fewer of them as its cache is cold or warm, which moved the nth call between runs)
        if sys._getframe(1).f_globals.get("__name__", "").startswith("adapterbench"):
            calls["n"] += 1
            if calls["n"] == nth:
                kill_self()
        return real(*args, **kwargs)

    setattr(owner, name, counted)


def killed_at(site: str, nth: int, run) -> None:
    """run() in a forked copy of this process that is killed with SIGKILL at the nth call of `site`."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3  # run() finished: the site never came
        try:
            arm(site, nth)
            run()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)  # reaped: its pid is free, as after any kill
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"not killed at {site} #{nth} (exit {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status})")


def temporaries(*folders: Path) -> list[Path]:
    """What an interrupted write leaves: dot-named entries (atomic temporaries, the eval's scratch dirs)."""
    return sorted(p for folder in folders if folder.exists() for p in folder.rglob(".*"))


def same_adapter(a: Path, b: Path) -> bool:
    tensors_a, tensors_b = adapter_tensors(a), adapter_tensors(b)
    return tensors_a.keys() == tensors_b.keys() and all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)


def partial_evaluations(store_file: Path) -> list[str]:
    """Evaluations missing their models or scores: what a write that was not one transaction would leave."""
    with database.connect(store_file) as conn:
        return [row[0] for row in conn.execute(
            "SELECT id FROM evaluations e WHERE NOT EXISTS (SELECT 1 FROM models m WHERE m.evaluation_id = e.id)"
            " OR NOT EXISTS (SELECT 1 FROM scores s WHERE s.evaluation_id = e.id)")]


# A child forked from a process whose torch thread pools have several threads hangs or fails ("Invalid thread
# pool!") at its first parallel region; `make test` runs this file in a process of its own with OMP_NUM_THREADS=1.
pytestmark = pytest.mark.skipif(torch.get_num_threads() > 1, reason="forks torch: run with OMP_NUM_THREADS=1 in a "
                                "process of its own, as make test does")


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    """Caches and scratch dirs of these runs in the test's own folder, so leftovers can be counted."""
    monkeypatch.setenv("ADAPTERBENCH_HOME", str(tmp_path / "home"))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory) -> Path:
    from adapterbench.training import train

    root = tmp_path_factory.mktemp("whole")
    train(config(tiny_model_dir, root, "whole", **TRAIN), store=root / "s.sqlite", show_progress=False)
    return root / "whole"


def check_training_recovers(site: str, nth: int, tiny_model_dir, tmp_path, uninterrupted: Path) -> None:
    from adapterbench.training import train

    cfg = config(tiny_model_dir, tmp_path, "run", **TRAIN)
    store_file = tmp_path / "s.sqlite"
    killed_at(site, nth, lambda: train(cfg, store=store_file, show_progress=False))
    run_dir = tmp_path / "run"
    train(cfg, resume=True, store=store_file, show_progress=False)  # resumes, or starts over without a checkpoint

    assert temporaries(run_dir, tmp_path / "home", tmp_path / "scratch") == []
    assert curve_steps(store_file, run_dir) == [0, 2, 4, 6]  # one curve point per evaluated step
    assert metrics_lines(run_dir) == metrics_lines(uninterrupted)
    assert same_adapter(run_dir / "adapter", uninterrupted / "adapter")
    assert adapter_identity(run_dir / "adapter")["sha256"] == adapter_identity(uninterrupted / "adapter")["sha256"]


# before checkpoint 4's rename (resumes from 2); inside checkpoint 2 (starts over); inside step 4's store row
TRAINING_KILLS = [("replace", 5), ("torch.save", 1), ("store row", 10)]


@pytest.mark.parametrize("site, nth", TRAINING_KILLS)
def test_a_training_run_killed_there_resumes_to_the_uninterrupted_adapter(site, nth, tiny_model_dir, tmp_path,
                                                                          uninterrupted):
    check_training_recovers(site, nth, tiny_model_dir, tmp_path, uninterrupted)


def more_training_kills(count: int, seed: int = 12) -> list[tuple[str, int]]:
    """Seeded picks among every site and call that a 6-step run reaches, beyond the fast cases."""
    reachable = ([("replace", n) for n in range(1, 10)] + [("torch.save", n) for n in (1, 2, 3)]
                 + [("store row", n) for n in range(1, 17)] + [("log", n) for n in range(1, 11)]
                 + [("step", n) for n in range(1, 7)])
    rng = random.Random(seed)
    return rng.sample([case for case in reachable if case not in TRAINING_KILLS], count)


@pytest.mark.slow
@pytest.mark.parametrize("site, nth", more_training_kills(12))
def test_more_kill_points_of_training(site, nth, tiny_model_dir, tmp_path, uninterrupted):
    check_training_recovers(site, nth, tiny_model_dir, tmp_path, uninterrupted)


@pytest.fixture(scope="module")
def eval_inputs(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval-inputs")
    suite = root / "suite.yaml"
    suite.write_text(f"name: two\ntasks:\n"
                     f"  - {{name: mc, type: multiple_choice, data: {SAMPLE}/mc_test.jsonl}}\n"
                     f"  - {{name: qa, type: generation, data: {SAMPLE}/qa_test.jsonl, max_new_tokens: 4}}\n")
    return suite, random_lora(tiny_model_dir, root / "lora", seed=2)


# between the base's two tasks; inside the store's transaction; before the predictions CSV's rename
@pytest.mark.parametrize("site, nth", [("scoring", 2), ("store row", 3), ("replace", 4)])
def test_an_evaluation_killed_there_leaves_nothing_half_done(site, nth, tiny_model_dir, eval_inputs, tmp_path):
    suite, lora = eval_inputs
    out = tmp_path / "out"
    store_file = tmp_path / "s.sqlite"
    args = ["eval", str(suite), "--base", str(tiny_model_dir), "--adapter", str(lora), "--limit", "2",
            "--store", str(store_file), "--predictions-csv", str(out / "answers.csv")]

    def run():
        with pytest.raises(SystemExit):
            main(args)

    killed_at(site, nth, run)
    if store_file.exists():
        assert partial_evaluations(store_file) == []
    run()
    assert temporaries(out, tmp_path / "home", tmp_path / "scratch") == []
    assert partial_evaluations(store_file) == []
    with database.connect(store_file) as conn:
        evaluations = database.list_evaluations(conn)
    assert len(evaluations) == (2 if site == "replace" else 1)  # killed after its save: that one is whole
    assert (out / "answers.csv").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(int(os.environ.get("FAULT_SEEDS", "3"))))  # ~15 s each; FAULT_SEEDS=20 for more
def test_adapterbench_train_killed_at_a_random_moment_resumes_cleanly(seed, tiny_model_dir, tmp_path,
                                                                      uninterrupted):
    """The literal kill -9 of a CLI process, at a moment drawn from `seed`: once its metrics.jsonl holds 1 to 8 of
    the run's 10 lines, wherever it is then (polled every 10 ms)."""
    import subprocess
    import sys
    import time

    import yaml

    cfg = config(tiny_model_dir, tmp_path, "run", **TRAIN)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    command = [sys.executable, "-m", "adapterbench", "train", str(tmp_path / "train.yaml"), "--store",
               str(tmp_path / "s.sqlite")]
    env = {**os.environ, "ADAPTERBENCH_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "scratch")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines, metrics = random.Random(seed).randint(1, 8), tmp_path / "run" / "metrics.jsonl"
    while process.poll() is None and (not metrics.is_file() or metrics.read_text().count("\n") < lines):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    done = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    run_dir = tmp_path / "run"
    assert temporaries(run_dir, tmp_path / "home", tmp_path / "scratch") == []
    assert curve_steps(tmp_path / "s.sqlite", run_dir) == [0, 2, 4, 6]
    assert [line for line in metrics_lines(run_dir) if line["kind"] == "train"] == [
        line for line in metrics_lines(uninterrupted) if line["kind"] == "train"]
    assert json.loads((run_dir / "manifest.json").read_text())["stats"]["steps"] == 6
    assert same_adapter(run_dir / "adapter", uninterrupted / "adapter")


def test_a_dead_writers_temporaries_are_removed_and_a_live_writers_kept(tmp_path):
    import subprocess
    import sys

    from adapterbench.atomic import atomic_dir, atomic_file, remove_stale
    from adapterbench.datafiles.writing import write_jsonl

    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = [folder / f".adapter.{dead}.k2j4x9_a", folder / f".report.md.{dead}.0f3a9b1c.tmp",
                     folder / f".r.jsonl.{dead}.9e8d7c6b.tmp"]
        kept = [folder / f".adapter.{live.pid}.q8w7e6r5", folder / f".other.{dead}.abcdefgh",
                folder / ".notes.1999.orig", folder / ".hidden"]  # a live writer's; another name's; not ours
        for path in (leftovers[0], kept[0]):
            path.mkdir()
            (path / "adapter_model.safetensors").write_bytes(b"half")
        for path in (*leftovers[1:], *kept[1:]):
            path.write_text("x")
        with atomic_dir(folder / "adapter") as tmp:
            (tmp / "done").write_text("")
        with atomic_file(folder / "report.md") as f:
            f.write("# report\n")
        write_jsonl(folder / "r.jsonl", [{"text": "t"}])
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["adapter", "report.md", "r.jsonl", *(p.name for p in kept)])
        remove_stale(folder)  # every name, as the trainer cleans its run dir at start
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["adapter", "report.md", "r.jsonl", *(p.name for p in kept if p.name != f".other.{dead}.abcdefgh")])
    finally:
        live.kill()
        live.wait()
