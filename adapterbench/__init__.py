"""adapterbench: score, train and regression-check LoRA adapters on your own domain data."""
__version__ = "0.1.0"
