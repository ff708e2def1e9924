"""The CPU a benchmark ran on (model name, the flags that decide bf16 speed, threads): printed and saved beside every
figure, since a ratio measured on one kind of CPU says little about another."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def describe() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    import torch

    return {"cpu": model, "flags": [flag for flag in FLAGS if flag in flags], "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None}


def line(machine: dict) -> str:
    flags = ", ".join(machine["flags"]) or "none of " + ", ".join(FLAGS)
    gpu = f"; GPU {machine['cuda']}" if machine["cuda"] else ""
    return f"machine: {machine['cpu']} ({flags}), {machine['cores']} cores, {machine['torch_threads']} torch threads{gpu}"
