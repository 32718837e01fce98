"""Placeholder replaced by the API module."""
