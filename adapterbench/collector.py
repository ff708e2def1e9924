"""Python's cyclic garbage collector tuned for a process that is one command: each full collection walks every
tracked object, ~600k of them once torch, transformers and lm-eval are imported, and few of them are garbage."""

from __future__ import annotations

import atexit
import gc

FULL_COLLECTION_SPACING = 10  # times the default number of younger collections between two full ones


def tune_for_one_command() -> None:
    """Full collections a tenth as often: imports and loading build the heap up without making garbage, and set off
    a full collection each time it grows by a quarter (9 of them, 1.5 s, before scoring starts; bench/RESULTS.md).
    At exit, what is garbage is collected once (finalizers run, files flush) and the interpreter's shutdown skips
    the rest, which it otherwise walks several times over (~2 s after scoring)."""
    young, middle, full = gc.get_threshold()
    gc.set_threshold(young, middle, full * FULL_COLLECTION_SPACING)
    atexit.register(_quick_shutdown)


def _quick_shutdown() -> None:
    gc.collect()
    gc.freeze()
