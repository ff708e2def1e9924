"""Checkpoints of a training run: written to a temporary folder then renamed (a killed save leaves no corrupt
checkpoint), the last K kept plus the best, and everything an exact resume needs, in tensors and plain containers
only, so they load with `torch.load(weights_only=True)`: a shared run dir cannot run code on resume."""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from adapterbench.atomic import atomic_dir
from adapterbench.errors import UserError

STATE_FILE = "trainer_state.pt"
FORMAT = 2  # 1 (unmarked) pickled numpy's RNG state and needed weights_only=False


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict,
                    rng_states: list[dict] | None = None) -> Path:
    """checkpoints/step-000050/: the adapter (a PEFT dir) and trainer_state.pt (optimizer, scheduler, the loop's
    own state, and the RNG of each process: this one's, or `rng_states` gathered from all of them)."""
    final = run_dir / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        save_peft_dir(model, tmp)
        torch.save({"format": FORMAT, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_states or [rng_state()], "state": state}, tmp / STATE_FILE)
    return final


def save_peft_dir(model, folder: Path) -> None:
    """The model's adapter as a standard PEFT dir, its config written canonically (one identity per adapter)."""
    from adapterbench.adapters.identity import write_canonical_config

    model.save_pretrained(folder)
    write_canonical_config(folder)


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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        weights = load_file(path / "adapter_model.safetensors")
    except pickle.UnpicklingError:
        raise UserError(f"{STATE_FILE} holds pickled objects, not only tensors (an older adapterbench wrote it, or "
                        "not adapterbench at all); refused, since unpickling can run code: train again into another "
                        "'out'", path=path) from None
    except (SafetensorError, RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"unreadable checkpoint ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                        path=path) from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise UserError(f"{STATE_FILE} is not a checkpoint of this adapterbench (format {FORMAT}); train again into "
                        "another 'out'", path=path)
    set_peft_model_state_dict(model, weights)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng_states = saved["rng"]
    set_rng_state(rng_states[process_index] if process_index < len(rng_states) else rng_states[0])
    return saved["state"]


def rng_state() -> dict:
    """Python's, numpy's and torch's generator states as tensors and plain values (weights_only loads them)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, torch.tensor(words, dtype=torch.int64), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def copy_adapter(source: Path, target: Path) -> None:
    """Replace `target` with the PEFT files of `source`, atomically."""
    with atomic_dir(target) as tmp:
        for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
