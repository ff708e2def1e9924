"""Suite -> lm-eval task configs, and the metric functions those tasks call."""
