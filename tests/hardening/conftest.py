"""The gateway client and the store world of `test_inputs.py`, shared by every hardening test."""

from tests.hardening.test_inputs import client, world  # noqa: F401
