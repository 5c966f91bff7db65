"""Request screening: the WAF-style first line, applied before any identity or policy work."""
