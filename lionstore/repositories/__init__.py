"""Repositories: turn commands into records, append them, keep projections current."""
