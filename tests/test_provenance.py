"""What a result was made from: the commit recorded is adapterbench's own code's, wherever the command runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adapterbench import provenance


def git(*args, cwd) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def other_repo(tmp_path):
    """A git checkout of something else, with a commit of its own."""
    git("init", "-q", cwd=tmp_path)
    (tmp_path / "notes.txt").write_text("not adapterbench\n")
    git("add", "notes.txt", cwd=tmp_path)
    git("commit", "-q", "-m", "other", cwd=tmp_path)
    return tmp_path


def test_git_commit_is_adapterbenchs_checkout_not_the_working_directorys(other_repo):
    try:
        ours = git("rev-parse", "HEAD", cwd=provenance.PACKAGE_DIR)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("adapterbench is not imported from a git checkout here")
    code = "from adapterbench.provenance import git_commit; print(git_commit())"
    printed = subprocess.run([sys.executable, "-c", code], cwd=other_repo, check=True, capture_output=True,
                             text=True).stdout.strip()
    assert printed == ours != git("rev-parse", "HEAD", cwd=other_repo)


def test_git_commit_is_none_for_a_package_that_its_enclosing_repository_does_not_track(other_repo, monkeypatch):
    installed = other_repo / ".venv" / "site-packages" / "adapterbench"  # a virtualenv inside a user's project
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", installed)
    assert provenance.git_commit() is None


def test_git_commit_is_none_outside_any_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repo above tmp
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)
    assert provenance.git_commit() is None
