"""The `!function utils.NAME` YAML tag: lm-eval's way for a task file to reference a Python hook."""

import yaml


class Function(str):
    """A YAML scalar written as `!function utils.NAME`."""


yaml.SafeDumper.add_representer(Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))
