"""Integrations with external systems."""
