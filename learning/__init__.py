"""Prediction and learning: pure functions over checkpoints (see STYLE.md)."""
