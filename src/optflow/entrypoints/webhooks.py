"""Placeholder replaced by the webhooks module."""
