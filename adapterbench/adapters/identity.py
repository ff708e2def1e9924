"""Adapter identity (sha256 of weights and config, the training manifest) and the check that an adapter fits the
loaded base before anything is scored with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from adapterbench.errors import UserError

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_files(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    config = path / "adapter_config.json"
    if not path.is_dir() or not config.is_file():
        raise UserError("not a PEFT adapter dir (expected adapter_config.json and adapter_model.safetensors)",
                        path=path)
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise UserError(f"adapter weights missing (expected one of {', '.join(WEIGHT_FILES)})", path=path)
    return config, weights


def adapter_identity(path: str | Path) -> dict:
    """What names an adapter across machines: the sha256 of its config and weights, not its path."""
    config_file, weights = adapter_files(path)
    digest = hashlib.sha256()
    for file in (config_file, weights):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    config = json.loads(config_file.read_text())
    manifest = next((p for p in (Path(path) / "manifest.json", Path(path).parent / "manifest.json") if p.is_file()),
                    None)
    return {"path": str(Path(path).resolve()), "sha256": digest.hexdigest(),
            "base_name": config.get("base_model_name_or_path"), "peft_type": config.get("peft_type"),
            "r": config.get("r"), "manifest": json.loads(manifest.read_text()) if manifest else None}


def check_compatible(base_model, path: str | Path) -> None:
    """Every LoRA matrix must land on an existing linear layer of matching shape; PEFT would otherwise skip
    missing modules with a warning and we would score the plain base under the adapter's name."""
    config_file, weights = adapter_files(path)
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"only LoRA adapters are supported, this one is {config.get('peft_type')}", path=config_file,
                        field="peft_type")
    modules = dict(base_model.named_modules())
    shapes = _tensor_shapes(weights)
    if not any(".lora_A" in name for name in shapes):
        raise UserError("no LoRA weights in the adapter file", path=weights)
    for name, shape in shapes.items():
        if ".lora_A" not in name and ".lora_B" not in name:
            continue
        target = name.removeprefix("base_model.model.").split(".lora_")[0]
        module = modules.get(target)
        if module is None:
            raise UserError(f"adapter targets '{target}', which this base does not have "
                            f"(adapter trained on {config.get('base_model_name_or_path')!r})", path=weights)
        if "embed" in target:
            continue  # embedding LoRA stores (r, vocab) and (hidden, r): shapes checked by PEFT on load
        in_features, out_features = getattr(module, "in_features", None), getattr(module, "out_features", None)
        expected = (in_features,) if ".lora_A" in name else (out_features,)
        actual = (shape[1],) if ".lora_A" in name else (shape[0],)
        if expected != actual:
            raise UserError(f"adapter weight {name} has shape {list(shape)} but '{target}' of this base is "
                            f"{in_features}->{out_features} (adapter trained on "
                            f"{config.get('base_model_name_or_path')!r})", path=weights)


def _tensor_shapes(weights: Path) -> dict[str, tuple]:
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(weights, framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    import torch

    return {name: tuple(t.shape) for name, t in torch.load(weights, map_location="cpu", weights_only=True).items()}
