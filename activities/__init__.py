"""Temporal activities: every side effect of a turn."""
