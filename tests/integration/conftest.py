"""Fixtures shared by the integration tests."""

from tests.fixtures.inference import configure_handler, handler, served_card, served_cloud  # noqa: F401
