"""Clipping, noise mechanisms and privacy accounting (numpy only)."""
