"""Cryptographic primitives only (no torch, no protocol logic)."""
