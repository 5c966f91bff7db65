"""The bundle: a compiled policy (screener, engine, limit plan) as one immutable snapshot, and the store that
holds and swaps it on reload."""
