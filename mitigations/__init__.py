"""The mitigation library, guardrails and their registry (see STYLE.md)."""
