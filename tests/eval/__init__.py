"""Evaluation tests: metrics against independent computations, evaluate() on tiny folders, the CLI."""
