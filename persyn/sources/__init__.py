"""Prompt sources and their verifiers: the built-in arithmetic generators, reasoning-gym task families and the
answer checks (needs only persyn.core)."""
