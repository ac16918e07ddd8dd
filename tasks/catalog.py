"""Imports every task module so that its registrations run."""
