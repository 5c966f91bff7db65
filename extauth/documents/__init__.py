"""Documents: the file formats (policy, screening, limits), their YAML loading with file:line errors, and the
shared field types. Imports nothing else of extauth."""
