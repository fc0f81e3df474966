"""store_service with real parallel sessions: concurrent key rotations of one store serialise on
the store row, so the audit trail links each rotation to the key it replaced and the key that
works is the last one answered."""

from __future__ import annotations

import itertools
import threading
from decimal import Decimal

from sqlalchemy import select

from jivapay.database.models import AuditLog, MerchantStore
from jivapay.database.utils import atomic_transaction, read_session
from jivapay.services import store_service
from tests.factories import make_reference, make_store


def test_parallel_rotations_serialise(committed_db) -> None:  # type: ignore[no-untyped-def]
    with atomic_transaction() as session:
        ref = make_reference(session, rate=Decimal("80"))
        world = make_store(session, ref)
        store_id, first_key = world.store.id, world.public_key

    barrier = threading.Barrier(4)
    answers: list[store_service.RotatedKeys] = []
    errors: list[BaseException] = []

    def rotate() -> None:
        try:
            with atomic_transaction() as session:
                store = session.get(MerchantStore, store_id)
                assert store is not None
                barrier.wait()
                answers.append(
                    store_service.rotate_keys(
                        session, store=store, actor=store_service.Actor(user_id=None)
                    )
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=rotate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({a.public_api_key for a in answers}) == 4

    with read_session() as session:
        store = session.get(MerchantStore, store_id)
        assert store is not None
        rows = session.scalars(
            select(AuditLog)
            .where(AuditLog.action == "store.keys_rotated", AuditLog.target_id == str(store_id))
            .order_by(AuditLog.id)
        ).all()
    # Each rotation replaced the key the previous one made: a chain from the first key to the
    # stored one, with no two rotations reading the same old key.
    chain = [(r.details["old_public_key"], r.details["new_public_key"]) for r in rows]
    assert len(chain) == 4
    assert chain[0][0] == first_key
    for (_, new), (old, _) in itertools.pairwise(chain):
        assert new == old
    assert chain[-1][1] == store.public_api_key
    assert store.private_api_key == next(
        a.private_api_key for a in answers if a.public_api_key == store.public_api_key
    )
