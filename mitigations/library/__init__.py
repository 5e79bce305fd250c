"""One strategy per module; mitigations/registry.py lists them."""
