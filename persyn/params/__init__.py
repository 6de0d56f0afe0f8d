"""Params.toml: the frozen dataclasses, every cross-key rule in one place, and the generated reference (needs
core, engines and sources)."""
