"""Attach a PEFT adapter of any type to a loaded base and take it off again: the checks that it really fits (every
weight lands, nothing PEFT would drop, it changes the model) and whether merging it into the weights is exact."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from adapterbench.errors import UserError

# harmless defaults of config fields an older PEFT does not know: a field left at one of these asks for nothing
_UNSET = (None, False, "", [], {})


@contextmanager
def attached(base_model, path: str | Path):
    """The base with the adapter at `path` on it for the duration of the block, and exactly the base after it: its
    own module objects put back where PEFT put wrappers (PEFT's unload() hands back a modules_to_save copy for the
    original, which unties a tied LM head), its biases restored (bias="all" adapters load theirs into the base's
    layers), attributes PEFT added removed."""
    import torch

    modules = dict(base_model.named_modules())
    attributes = set(vars(base_model))
    biases = {name: p.detach().clone() for name, p in base_model.named_parameters() if name.endswith("bias")}
    try:
        yield attach(base_model, path)
    finally:
        for name, module in modules.items():
            parent, _, child = name.rpartition(".")
            if name and getattr(modules[parent], child) is not module:
                setattr(modules[parent], child, module)
        for attribute in set(vars(base_model)) - attributes:
            delattr(base_model, attribute)
        with torch.no_grad():
            for name, p in base_model.named_parameters():
                if name in biases:
                    p.copy_(biases[name])


def attach(base_model, path: str | Path):
    """Wrap `base_model` in PEFT's own `PeftModel.from_pretrained` with the one adapter at `path` (as lm-eval's
    `peft=` does) and check that every weight of the file landed. Returns the PeftModel in eval mode; only
    `attached` takes it off again."""
    from peft import PeftModel

    from adapterbench.adapters.identity import adapter_files, read_json_object

    path = Path(path)
    config_file, weights = adapter_files(path)
    fields = read_json_object(config_file)
    peft_type = fields.get("peft_type", "LORA")
    _check_config_fields(fields, config_file)
    if peft_type == "LORA":
        check_lora_fits(base_model, fields, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's warnings here are about training, or are checked below
        try:
            # PEFT's default adapter name, as lm-eval's peft= has it: a label could collide with module names
            model = PeftModel.from_pretrained(base_model, str(path))
        except (ValueError, RuntimeError, KeyError, TypeError, NotImplementedError) as error:
            said = " ".join(line.strip() for line in str(error).splitlines()[:2] if line.strip())
            raise UserError(f"PEFT cannot apply this {peft_type} adapter to this base: "
                            f"{said[:300] or type(error).__name__}", path=path) from None
    stray = _weights_that_did_not_land(model, weights)
    if stray:
        raise UserError(f"{len(stray)} weight(s) of the adapter file land nowhere in this base (first: {stray[0]}); "
                        "it was trained on another model", path=path)
    model.eval()
    return model


def _weights_that_did_not_land(model, weights: Path) -> list[str]:
    """The file's tensors missing from, or unequal to, the adapter PEFT now holds (what save_pretrained would write
    back): PEFT skips keys it cannot place with at most a warning, and PEFT's warning also fires on tied weights
    that did load."""
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    held = get_peft_model_state_dict(model, adapter_name=model.active_adapter)
    saved = load_file(weights)  # identity.adapter_files admits safetensors only
    stray = []
    for name, tensor in saved.items():
        mine = held.get(name)
        if mine is None or mine.shape != tensor.shape:
            stray.append(name)
            continue
        coarser = tensor.dtype if tensor.element_size() <= mine.element_size() else mine.dtype  # bf16 files -> fp32
        if not torch.equal(mine.detach().cpu().to(coarser), tensor.to(coarser)):
            stray.append(name)
    return stray


def mergeable(model) -> bool:
    """Whether W + delta for every layer of the active adapter is exactly what PEFT's unmerged forward computes
    (up to float rounding): plain LoRA on linear layers only. Embedding LoRA on tied embeddings would move the LM
    head too; DoRA rescales by a norm, LoRA bias adds a term, modules_to_save and trainable tokens swap modules:
    those run PEFT's unmerged forward (tests/test_adapter_types.py proves both ways)."""
    import torch
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    label = model.active_adapter
    config = model.peft_config[label]
    if config.peft_type.value != "LORA" or getattr(config, "use_dora", False) or getattr(config, "lora_bias", False):
        return False
    for module in model.modules():
        if isinstance(module, AuxiliaryTrainingWrapper):
            return False
        if isinstance(module, LoraLayer) and label in module.r:
            if not isinstance(module.get_base_layer(), torch.nn.Linear) or module.use_dora.get(label, False):
                return False
    return True


def changes_outputs(model, tokenizer) -> bool:
    """The adapter's outputs differ from the base's on a probe: an adapter whose B matrices are zero, whose targets
    match nothing or whose weights failed to load gives the base's logits bit for bit."""
    import torch

    ids = tokenizer("The adapter under test answers this probe sentence, and the base answers it too.",
                    return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        tuned = model(input_ids=ids).logits[:, -ids.shape[1]:]  # prompt learning prepends virtual positions
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    return not torch.equal(tuned, plain)


def check_lora_fits(base_model, config: dict, weights: Path) -> None:
    """Every LoRA matrix must land on an existing layer of matching shape, checked before PEFT loads it, so the
    refusal names the layer and the shapes (`config`: adapter_config.json's fields)."""
    modules = dict(base_model.named_modules())
    shapes = _tensor_shapes(weights)
    if not any(".lora_A" in name or ".lora_embedding_A" in name for name in shapes):
        raise UserError("no LoRA weights in the adapter file", path=weights)
    for name, shape in shapes.items():
        if ".lora_A" not in name and ".lora_B" not in name:
            continue
        target = name.removeprefix("base_model.model.").split(".lora_")[0]
        module = modules.get(target)
        if module is None:
            raise UserError(f"adapter targets '{target}', which this base does not have "
                            f"(adapter trained on {config.get('base_model_name_or_path')!r})", path=weights)
        in_features, out_features = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if in_features is None:
            continue  # embeddings and convolutions: PEFT checks their shapes on load
        expected = (in_features,) if ".lora_A" in name else (out_features,)
        actual = (shape[-1],) if ".lora_A" in name else (shape[0],)
        if expected != actual:
            raise UserError(f"adapter weight {name} has shape {list(shape)} but '{target}' of this base is "
                            f"{in_features}->{out_features} (adapter trained on "
                            f"{config.get('base_model_name_or_path')!r})", path=weights)


def _check_config_fields(fields: dict, config_file: Path) -> None:
    """PEFT drops config fields it does not know with a warning and scores the adapter without them: a field a newer
    PEFT added, set to anything but its default, is refused instead."""
    import peft
    from peft import PeftConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = fields.get("peft_type")
    config_class = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    if config_class is None:
        raise UserError(f"unknown PEFT adapter type {peft_type!r} for peft {peft.__version__}; a newer peft may know "
                        "it", path=config_file, field="peft_type")
    known = set(config_class.__dataclass_fields__) | set(PeftConfig.__dataclass_fields__)
    unknown = sorted(k for k, v in fields.items() if k not in known and v not in _UNSET)
    if unknown:
        raise UserError(f"saved by a newer PEFT: peft {peft.__version__} does not know {', '.join(unknown)} and would "
                        "score the adapter without them; upgrade peft", path=config_file, field=unknown[0])


def _tensor_shapes(weights: Path) -> dict[str, tuple]:
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
