"""Readers and writers of external annotation formats (pure, no Django)."""
