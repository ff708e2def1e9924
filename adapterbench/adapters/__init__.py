"""Base models and adapters: resolution, loading (dtype or 4-bit), identity and compatibility."""

from adapterbench.adapters.models import DEFAULT_MODEL, load_model, model_info, resolve_dtype, resolve_model

__all__ = ["DEFAULT_MODEL", "load_model", "model_info", "resolve_dtype", "resolve_model"]
