"""Test configuration: the lab fixtures live in tests/labfixture.py."""

pytest_plugins = ["tests.labfixture"]
