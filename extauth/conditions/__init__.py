"""Conditions: the predicate compiler shared by authorization rules and rate-limit overrides."""
