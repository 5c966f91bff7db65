"""Tools over a compiled policy: the explain command, the `extauth test` runner, synthetic requests."""
