"""Tests of the integrations (a package, so its module names cannot clash)."""
