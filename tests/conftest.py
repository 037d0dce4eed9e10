"""Shared fixtures: real servers only (see tests/fixtures/)."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.s3", "tests.fixtures.pg15",
                  "tests.fixtures.servers", "tests.fixtures.helm"]
