"""The CLI's shape: every command is listed, --help never imports torch, and user errors exit 2 without a
traceback."""

from __future__ import annotations

import subprocess
import sys

COMMANDS = ["eval", "train", "report", "gate", "chat", "generate", "runs", "tasks", "data", "models", "demo"]


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "adapterbench", *args], capture_output=True, text=True, **kwargs)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 1}
    assert set(COMMANDS) <= listed


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
