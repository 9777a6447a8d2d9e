"""Benchmarks that print figures (docs/figures.md); each runs as
`.venv/bin/python -m bench.<name>`."""
