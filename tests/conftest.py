"""Shared fixtures: real servers only (see tests/fixtures/)."""

pytest_plugins = ["tests.fixtures.postgres"]
