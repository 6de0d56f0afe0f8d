"""persyn: personalised, router-guided multi-teacher distillation datasets (PerSyn)."""

__version__ = "0.1.0"
