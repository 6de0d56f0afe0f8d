"""Fixtures for the tests and the benches: tiny models built on the spot (tiny) and tiny DVC projects,
a git + DVC copy of this pipeline with the tiny params (dvcproject). The top floor: nothing in the
library imports it."""
