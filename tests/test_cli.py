"""The CLI's shape: every command is listed with its help, every option has help and shows in its command's
--help, --help never imports torch, and user errors exit 2 without a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys

COMMANDS = ["eval", "train", "report", "gate", "plan", "chat", "generate", "runs", "tasks", "data", "models", "demo"]
# Help is read as its words: what Rich draws around them (boxes, padding, colour) is not the CLI's shape.
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "adapterbench", *args], capture_output=True, text=True, **kwargs)


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text))


def commands(command, path=()):
    """(path, click command) for the root and every command and subcommand under it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def root_command():
    import typer

    from adapterbench.cli import app

    return typer.main.get_command(app)


def test_help_lists_every_command_with_the_start_of_its_help():
    listed = root_command().commands
    assert set(COMMANDS) <= set(listed)
    result = run_cli("--help", env={**os.environ, **WIDE})
    assert result.returncode == 0
    shown = words(result.stdout)
    for name, command in listed.items():
        assert command.help and command.help.strip(), f"{name} has no help"
        start = " ".join(re.findall(r"\w+", command.help)[:4])
        assert re.search(rf"\b{name}\b", result.stdout) and f"{name} {start}" in shown, f"{name}: {start!r} not listed"


def test_every_option_and_argument_has_help_and_its_command_help_shows_each_option():
    from typer.testing import CliRunner

    from adapterbench.cli import app

    for path, command in commands(root_command()):
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        for param in params:
            assert (getattr(param, "help", None) or "").strip(), f"{' '.join(path)} {param.opts}: no help"
        result = CliRunner().invoke(app, [*path, "--help"], env=WIDE)
        assert result.exit_code == 0, result.output
        for param in params:
            if param.param_type_name == "option":
                for opt in param.opts:
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", result.output), f"{path} {opt}"


def test_help_does_not_import_torch():
    code = ("import sys\nfrom adapterbench.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'lm_eval', 'pandas') if m in sys.modules]\n"
            "print(','.join(heavy) or 'none')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "none"


def test_user_error_is_one_line_and_exit_code_2(tmp_path):
    result = run_cli("models", "info", str(tmp_path / "missing.gguf"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.gguf'}: GGUF file not found"
    assert "Traceback" not in result.stderr
