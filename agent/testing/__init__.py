"""Test helpers that ship with the package: the deterministic scripted model."""
