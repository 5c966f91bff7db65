"""The audit stream: one structured JSON event per decision (docs/audit.md)."""
