"""Fixtures of the attack suite: the API server of the integration tests."""

from tests.integration.test_api import api, start_api  # noqa: F401
