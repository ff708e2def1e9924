"""The garbage collector's tuning for a process that is one command: full collections spaced out, a quick shutdown
that still finalizes what is garbage, and nothing changed for a process that calls the CLI in-process."""

from __future__ import annotations

import gc
import subprocess
import sys

from adapterbench.collector import FULL_COLLECTION_SPACING

COMMAND_PROCESS = """
import atexit, gc, sys
atexit.register(lambda: print("at exit:", gc.get_threshold()[2], gc.get_freeze_count() > 0))  # runs after ours
default_full = gc.get_threshold()[2]
sys.argv = ["adapterbench", "--help"]
from adapterbench.cli import main
try:
    main()
except SystemExit:
    pass
print("default:", default_full)
"""


def test_the_command_process_spaces_full_collections_and_skips_its_heap_at_shutdown():
    result = subprocess.run([sys.executable, "-c", COMMAND_PROCESS], capture_output=True, text=True, check=True)
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    full, frozen = lines["at exit"].split()
    assert int(full) == int(lines["default"]) * FULL_COLLECTION_SPACING
    assert frozen == "True"


GARBAGE_AT_EXIT = """
import sys
from adapterbench.collector import tune_for_one_command
tune_for_one_command()

class Flushes:
    def __del__(self):
        with open(sys.argv[1], "w") as f:
            f.write("finalized")

cycle = Flushes()
cycle.me = cycle
del cycle
"""


def test_garbage_left_at_exit_is_still_finalized(tmp_path):
    marker = tmp_path / "marker"
    subprocess.run([sys.executable, "-c", GARBAGE_AT_EXIT, str(marker)], check=True)
    assert marker.read_text() == "finalized"


def test_the_cli_called_in_process_leaves_the_collector_as_it_was():
    from adapterbench.cli import main

    before = gc.get_threshold()
    try:
        main(["--help"])
    except SystemExit:
        pass
    assert gc.get_threshold() == before
