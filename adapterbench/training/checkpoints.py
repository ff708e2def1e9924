"""Checkpoints of a training run: written to a temporary folder then renamed (a killed save leaves no corrupt
checkpoint), the last K kept plus the best, and everything an exact resume needs."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from adapterbench.atomic import atomic_dir

STATE_FILE = "trainer_state.pt"


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict,
                    rng_states: list[dict] | None = None) -> Path:
    """checkpoints/step-000050/: the adapter (a PEFT dir) and trainer_state.pt (optimizer, scheduler, the loop's
    own state, and the RNG of each process: this one's, or `rng_states` gathered from all of them)."""
    final = run_dir / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_states or [rng_state()], "state": state}, tmp / STATE_FILE)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted save start with a dot)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file())


def prune_checkpoints(run_dir: Path, keep: int, best_step: int | None) -> None:
    checkpoints = list_checkpoints(run_dir)
    for path in checkpoints[:-keep]:
        if best_step is None or path.name != f"step-{best_step:06d}":
            shutil.rmtree(path)
    for leftover in (run_dir / "checkpoints").glob(".step-*"):  # from a save that was killed
        shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, process_index: int = 0) -> dict:
    """Restore adapter weights, optimizer, scheduler and this process's RNG (the main process's when the run had
    fewer processes); return the loop's saved state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng_states = saved["rng"]
    set_rng_state(rng_states[process_index] if process_index < len(rng_states) else rng_states[0])
    return saved["state"]


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def copy_adapter(source: Path, target: Path) -> None:
    """Replace `target` with the PEFT files of `source`, atomically."""
    with atomic_dir(target) as tmp:
        for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
