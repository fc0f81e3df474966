"""Fixtures of the service tests."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.services.order_world import build_world


@pytest.fixture
def world(db: Session) -> tuple[Any, Any, Any, Any]:
    """(ref, store, trader, requisite): see `order_world.build_world`."""
    return build_world(db)
