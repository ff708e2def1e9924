"""Every example's README runs: its ```sh commands are executed in a copy of the example's folder at a tiny size (2
training steps, --limit 2, a tiny base model), and the files they promise must exist. A README command this test
cannot run fails it, so the examples cannot rot."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
FOLDERS = sorted(p.name for p in EXAMPLES.iterdir() if (p / "README.md").is_file())
OUTPUT_OPTIONS = ("--out", "-o", "--predictions-csv", "--output-dir", "--junit", "--markdown")


def readme_commands(readme: Path) -> list[str]:
    """The commands of the README's ```sh blocks, in order: one per line, `\\` continuations joined, comments
    dropped."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", readme.read_text(encoding="utf-8"), re.S | re.M):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def tiny(argv: list[str], base: Path) -> list[str]:
    """The same command at a tiny size, on the tests' tiny base model (2 layers, so a LoRA layer list becomes its last
    layer) kept in full precision: bitsandbytes' 4-bit kernels cost ~10 s per tiny run on a CPU, mostly while
    generating, and 4-bit training has tests of its own. Two steps can leave a run's best/ at its untrained step-0
    adapter, which eval rightly refuses as a no-op at full size; here --allow-noop-adapter lets the command run."""
    command = argv[0]
    if command == "train":
        argv = ["lora.layers=[1]" if a.startswith("lora.layers=") else a for a in argv]
        return argv + [f"base_model={base}", "quant=none", "max_steps=2", "epochs=null", "eval.every=1",
                       "eval.limit=2"]
    if command not in ("eval", "generate"):
        return argv
    if "--quant" in argv:
        argv = argv[:argv.index("--quant")] + argv[argv.index("--quant") + 2:]
    if "--base" not in argv:
        argv = argv + ["--base", str(base)]
    return argv + ["--allow-noop-adapter"] + (["--limit", "2"] if command == "eval" else ["--max-new-tokens", "8"])


def promised_outputs(argv: list[str]) -> list[Path]:
    """Files and folders the command says it writes: the values of output options, and a training run's dir."""
    paths = [Path(value) for option, value in zip(argv, argv[1:]) if option in OUTPUT_OPTIONS]
    if argv[0] == "train":
        from adapterbench.config import load_train

        out = load_train(argv[1], [a for a in argv[2:] if "=" in a]).out
        paths += [out / "adapter" / "adapter_config.json", out / "best" / "adapter_config.json",
                  out / "manifest.json", out / "metrics.jsonl"]
    return paths


def run_python(argv: list[str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"python {' '.join(argv[1:])} failed:\n{done.stdout}\n{done.stderr}"


def run_adapterbench(argv: list[str]) -> int:
    from typer.testing import CliRunner

    from adapterbench.cli import app

    result = CliRunner().invoke(app, argv)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"adapterbench {shlex.join(argv)} raised:\n{result.output}") from result.exception
    return result.exit_code


@pytest.mark.slow
@pytest.mark.parametrize("name", FOLDERS)
def test_example_readme_commands_run(name, tiny_model_dir, tmp_path, monkeypatch):
    folder = tmp_path / name
    shutil.copytree(EXAMPLES / name, folder,
                    ignore=shutil.ignore_patterns("runs", "splits", "results", "*.sqlite*", "__pycache__"))
    monkeypatch.chdir(folder)
    monkeypatch.delenv("ADAPTERBENCH_STORE", raising=False)
    commands = readme_commands(folder / "README.md")
    assert commands, "the README has no ```sh commands"
    for command in commands:
        argv = shlex.split(command)
        if argv[0] in ("python", "python3"):
            run_python(argv, folder)
            continue
        assert argv[0] == "adapterbench", f"the test cannot run this README command: {command}"
        argv = tiny(argv[1:], tiny_model_dir)
        code = run_adapterbench(argv)
        # a gate too: on --limit 2 items no paired test can reach alpha = 0.05 (an exact p of 0.5 at best), so
        # every rule is unchanged and the gate passes
        assert code == 0, f"exit {code}: adapterbench {shlex.join(argv)}"
        for path in promised_outputs(argv):
            assert path.exists(), f"adapterbench {argv[0]} did not write {path}"
        if argv[0] == "gate" and "--out" in argv:
            verdict = json.loads((Path(argv[argv.index("--out") + 1]) / "verdict.json").read_text())
            assert verdict["status"] == "passed" and verdict["rows"]
            assert {(r["verdict"], r["n_items"]) for r in verdict["rows"]} == {("unchanged", 2)}
    assert (folder / "adapterbench.sqlite").is_file()


@pytest.mark.parametrize("name", FOLDERS)
def test_example_configs_load_and_committed_data_checks_clean(name):
    """Every suite and train file loads (runs go under runs/, which git ignores), and every committed data file the
    README checks passes `data check` (generated ones are checked by the README run above)."""
    from typer.testing import CliRunner

    from adapterbench.cli import app
    from adapterbench.config import load_suite, load_train

    folder = EXAMPLES / name
    for path in sorted(folder.glob("suite*.yaml")):
        assert load_suite(path).tasks
    for path in sorted(folder.glob("train*.yaml")):
        assert load_train(path).out.parent == folder / "runs"
    commands = readme_commands(folder / "README.md")
    checks = [shlex.split(c)[3:] for c in commands if c.startswith("adapterbench data check")]
    assert checks, "the README checks no data file"
    for file, *options in checks:
        if (folder / file).exists():
            result = CliRunner().invoke(app, ["data", "check", str(folder / file), *options])
            assert result.exit_code == 0, result.output
