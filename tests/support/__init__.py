"""Shared test helpers (importable as `support` because pytest puts tests/ on sys.path)."""
