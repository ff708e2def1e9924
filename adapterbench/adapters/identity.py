"""Adapter identity (sha256 of the canonical config and the weights, the training manifest) and the checks that an
adapter dir is whole and was trained on the loaded base, made before any model is loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

from adapterbench.digest import file_sha256, text_sha256
from adapterbench.errors import UserError

WEIGHTS = "adapter_model.safetensors"
# Lists of adapter_config.json whose order means nothing: PEFT builds some of them from a set, whose order changes
# from one process to the next, and one adapter must keep one identity.
UNORDERED = ("target_modules", "modules_to_save", "exclude_modules", "layers_to_transform", "target_parameters")
# Where and with which PEFT release it was saved, not what it computes: left out of the identity, so one adapter
# copied to another machine (its base at another path) keeps its name.
INCIDENTAL = ("base_model_name_or_path", "peft_version")
_LORA_MATRIX = re.compile(r"\.lora_(?:embedding_)?([AB])\b")


def adapter_files(path: str | Path) -> tuple[Path, Path]:
    """(adapter_config.json, adapter_model.safetensors) of a PEFT adapter dir. A pickled adapter_model.bin is
    refused: unpickling a file someone shared can run code, and safetensors is what PEFT has written since 0.5."""
    path = Path(path)
    config = path / "adapter_config.json"
    if not path.is_dir() or not config.is_file():
        raise UserError(f"not a PEFT adapter dir (expected adapter_config.json and {WEIGHTS})", path=path)
    weights = path / WEIGHTS
    if not weights.is_file():
        if (path / "adapter_model.bin").is_file():
            raise UserError(f"adapter_model.bin is a pickle, which can run code when loaded; only {WEIGHTS} is "
                            "read (convert it with safetensors.torch.save_file where you trust its source)", path=path)
        raise UserError(f"adapter weights missing (expected {WEIGHTS})", path=path)
    return config, weights


def adapter_identity(path: str | Path) -> dict:
    """What names an adapter across machines: the sha256 of its canonical config and of its weights, not its path.
    Its files are checked first (JSON, safetensors, finite weights, rank), so a broken adapter dir is one line
    before any model is loaded."""
    config_file, weights = adapter_files(path)
    config = read_json_object(config_file)
    check_weights(weights, config, config_file)
    manifest_file = next((p for p in (Path(path) / "manifest.json", Path(path).parent / "manifest.json")
                          if p.is_file()), None)
    manifest = read_json_object(manifest_file) if manifest_file else None
    if manifest is not None:
        for key in ("base", "config"):
            if not isinstance(manifest.get(key, {}), dict):
                raise UserError("expected an object", path=manifest_file, field=key)
    essential = {key: value for key, value in config.items() if key not in INCIDENTAL}
    sha256 = text_sha256(f"{config_file.name}\0{canonical_config(essential)}\0{weights.name}\0{file_sha256(weights)}")
    return {"path": str(Path(path).resolve()), "sha256": sha256,
            "base_name": config.get("base_model_name_or_path"), "peft_type": config.get("peft_type"),
            "r": config.get("r"), "manifest": manifest}


def canonical_config(config: dict) -> str:
    """adapter_config.json as we hash and write it: sorted keys, order-free lists sorted, one layout."""
    def ordered(value: list) -> list:
        try:
            return sorted(value)
        except TypeError:  # mixed kinds: any fixed order will do
            return sorted(value, key=json.dumps)

    canonical = {key: ordered(value) if key in UNORDERED and isinstance(value, list) else value
                 for key, value in config.items()}
    return json.dumps(canonical, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_canonical_config(adapter_dir: Path) -> None:
    """Rewrite a just-saved adapter_config.json canonically, so two same-seed runs give byte-identical dirs."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    config_file.write_text(canonical_config(read_json_object(config_file)), encoding="utf-8")


def read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg}, column {exc.colno})", path=path, line=exc.lineno) from None
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", path=path) from None
    if not isinstance(value, dict):
        raise UserError(f"expected a JSON object, found {type(value).__name__}", path=path)
    return value


def check_weights(weights: Path, config: dict, config_file: Path) -> None:
    """The weights file is whole safetensors, every value finite (a diverged run saves NaN, which would score as
    garbage under the adapter's name), and LoRA matrices have the rank the config says."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"not a readable safetensors file, cut short or damaged ({exc})", path=weights) from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UserError(f"weight {name} holds {bad} NaN/inf values (the training diverged?); refused",
                            path=weights)
    if config.get("peft_type", "LORA") != "LORA" or "r" not in config:
        return
    r = config["r"]
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise UserError(f"expected a positive integer, got {r!r}", path=config_file, field="r")
    pattern = config.get("rank_pattern") or {}
    ranks = {r, *(pattern.values() if isinstance(pattern, dict) else ())}
    for name, tensor in tensors.items():
        matrix = _LORA_MATRIX.search(name)
        if matrix is None or tensor.dim() < 2:
            continue
        rank = tensor.shape[0 if matrix.group(1) == "A" else 1]  # A is (r, in), B is (out, r)
        if rank not in ranks:
            raise UserError(f"says r={r} but weight {name} has rank {rank} (shape {list(tensor.shape)})",
                            path=config_file, field="r")


def check_trained_base(identities: dict[str, dict], base_sha: str, *, allow_mismatch: bool = False) -> list[str]:
    """Labels of the adapters whose training manifest names another base than the loaded one (by content sha256);
    refused unless `allow_mismatch`: a LoRA update means nothing on weights it was not trained against, even when
    the shapes fit. Adapters without a manifest (or one that records no base) cannot be checked."""
    mismatched = []
    for label, identity in identities.items():
        trained = ((identity.get("manifest") or {}).get("base") or {})
        if trained.get("sha256") and trained["sha256"] != base_sha:
            if not allow_mismatch:
                raise UserError(f"adapter '{label}' was trained on another base ({trained.get('ref')!r}, sha256 "
                                f"{str(trained['sha256'])[:12]}) than this one (sha256 {base_sha[:12]}); score it "
                                "anyway with --allow-base-mismatch", path=identity["path"])
            mismatched.append(label)
    return mismatched
