"""Imports every task module so that its registrations run."""
from tasks import mlp  # noqa: F401
