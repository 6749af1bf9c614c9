"""Top floor: integrations with other libraries (each behind its own extra)."""
