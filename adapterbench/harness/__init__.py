"""Harness: one base with switchable adapters scored by lm-eval; the results store; statistics; the gate."""
