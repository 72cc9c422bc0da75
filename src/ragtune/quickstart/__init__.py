"""`ragtune quickstart`: the whole loop on one dataset or folder, with a before/after report."""

from ragtune.quickstart.pipeline import SHIPPED_DATASET, Quickstart, QuickstartConfig, reproduce_command

__all__ = ["SHIPPED_DATASET", "Quickstart", "QuickstartConfig", "reproduce_command"]
