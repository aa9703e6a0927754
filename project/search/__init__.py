"""Hyperparameter search with Optuna: `python -m project.search` (project/search/command.py)."""
