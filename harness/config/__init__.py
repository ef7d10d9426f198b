"""Configuration files: YAML that keeps line numbers, validated by JSON Schema.

Every YAML file the harness reads (card configs now; scenarios and reader profiles later) goes
through :func:`load_validated`, so that any mistake is a :class:`~harness.errors.ConfigError`
with ``file:line``, the offending lines, and what was expected.
"""

from harness.config.yamlfile import (
    LoadedYAML,
    load_validated,
    load_yaml,
    location_of,
    validate,
    validate_at,
)

__all__ = [
    "LoadedYAML",
    "load_validated",
    "load_yaml",
    "location_of",
    "validate",
    "validate_at",
]
