"""Test-wide settings: CPU only, wandb disabled, no network."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
