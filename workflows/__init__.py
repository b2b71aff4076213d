"""Temporal workflows: deterministic code only, no I/O imports."""
