"""Fixtures: being written."""
