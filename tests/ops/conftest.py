"""Fixtures of the ops tests: the real llama.cpp server of the reason tests."""

from tests.reason.conftest import model_server

__all__ = ["model_server"]
