"""The intake routes' own request handling (`routes.OneTripIntakeRoute`) against FastAPI's: the
same endpoints served both ways answer every malformed, unsigned, unkeyed or invalid request
identically, in the same order of precedence; a good request is created either way, and the one-trip
route takes one trip to the threadpool where FastAPI takes three."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anyio.to_thread
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway import router as gateway
from jivapay.api_routers.gateway.routes import OneTripIntakeRoute
from jivapay.api_routers.routing import LosslessJSONRoute
from jivapay.database.models import IdempotencyKey, IncomingOrder, MerchantStore, StoreCommission
from jivapay.servers.app_factory import ServerName, build_app
from tests.factories import Ref, StoreWorld, gateway_headers, make_reference, make_store
from tests.sql_statements import recorded_statements

D = Decimal
PAYIN = "/gateway/payin/init"
PAYOUT = "/gateway/payout/init"


def _fastapi_router() -> APIRouter:
    """The gateway's routes with the intake endpoints served by FastAPI's own handler."""
    reference = APIRouter(prefix="/gateway", route_class=LosslessJSONRoute)
    for route in gateway.router.routes:
        assert isinstance(route, APIRoute)
        reference.add_api_route(
            route.path.removeprefix("/gateway"),
            route.endpoint,
            methods=list(route.methods),
            status_code=route.status_code,
            dependencies=route.dependencies,
            route_class_override=LosslessJSONRoute,
        )
    return reference


@pytest.fixture
def clients(db: Session) -> tuple[TestClient, TestClient]:
    one_trip = build_app(ServerName.GATEWAY, routers=[gateway.router])
    plain = build_app(ServerName.GATEWAY, routers=[_fastapi_router()])
    return TestClient(one_trip), TestClient(plain)


@pytest.fixture
def world(db: Session) -> tuple[Ref, StoreWorld]:
    ref = make_reference(db, rate=D("95.5"))
    store = make_store(db, ref, lower=D("100"), upper=D("50000"), balance=D("1000"))
    db.commit()
    return ref, store


def test_the_intake_routes_take_one_trip() -> None:
    routes = [r for r in gateway.router.routes if isinstance(r, APIRoute)]
    assert len(routes) == len(gateway.router.routes)
    one_trip = {r.path for r in routes if isinstance(r, OneTripIntakeRoute)}
    assert one_trip == {PAYIN, PAYOUT}


def test_an_endpoint_with_other_parameters_is_refused_at_import() -> None:
    def extra(store: Any, key: Any, data: Any, session: Any, request: Any, body: Any, x: int):
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="declares exactly"):
        OneTripIntakeRoute("/x", extra, methods=["POST"])


Request = tuple[bytes, dict[str, str]]


def _signed(world: StoreWorld, path: str, raw: bytes, **headers: str | None) -> dict[str, str]:
    signed = gateway_headers(world, "POST", path, raw, idempotency_key=uuid.uuid4().hex)
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            signed.pop(name, None)
        else:
            signed[name] = value
    return signed


def _cases(ref: Ref, world: StoreWorld, path: str) -> Iterator[tuple[str, Request]]:
    good = json.dumps(
        {
            "merchant_order_id": "m-1",
            "amount_fiat": "1000.00",
            "fiat_currency": ref.fiat.code,
            "customer_id": "c-1",
        }
    ).encode()
    invalid = json.dumps({"amount_fiat": "abc", "customer_ip": 5}).encode()
    for name, raw in [
        ("malformed JSON", b'{"amount_fiat": 1'),
        ("not UTF-8", b'{"merchant_order_id": "\xff"}'),
        ("a JSON array", b"[1, 2]"),
        ("invalid fields", invalid),
        ("empty body", b""),
    ]:
        yield name, (raw, _signed(world, path, raw))
    yield "no content type", (good, _signed(world, path, good, Content_Type=None))
    yield "text/plain", (good, _signed(world, path, good, Content_Type="text/plain"))
    yield (
        "a +json type",
        (invalid, _signed(world, path, invalid, Content_Type="application/x+json")),
    )
    # Precedence: malformed JSON before the signature, the signature before the key, the key
    # before the body's model.
    yield "malformed and unsigned", (b"{", _signed(world, path, b"{", X_Signature="0" * 64))
    yield "invalid and unsigned", (invalid, _signed(world, path, invalid, X_Signature=None))
    yield "invalid, unknown key", (invalid, _signed(world, path, invalid, X_API_Key="pk_nope"))
    yield (
        "unsigned and unkeyed",
        (good, _signed(world, path, good, X_Signature=None, Idempotency_Key=None)),
    )
    yield "invalid and unkeyed", (invalid, _signed(world, path, invalid, Idempotency_Key=None))
    yield "bad key", (good, _signed(world, path, good, Idempotency_Key=" "))
    yield "stale timestamp", (good, _signed(world, path, good, X_Timestamp="1"))


def _comparable(response: Any) -> tuple[int, str, Any]:
    body = response.json()
    for varying in ("instance", "request_id"):
        body.pop(varying, None)
    return response.status_code, response.headers["content-type"], body


def _count(db: Session) -> tuple[int, int]:
    db.expire_all()
    orders = db.scalar(select(func.count()).select_from(IncomingOrder))
    keys = db.scalar(select(func.count()).select_from(IdempotencyKey))
    return orders or 0, keys or 0


@pytest.mark.parametrize("path", [PAYIN, PAYOUT])
def test_refusals_match_fastapi_and_write_nothing(db: Session, clients, world, path) -> None:
    one_trip, plain = clients
    ref, store = world
    before = _count(db)
    seen = set()
    for name, (raw, headers) in _cases(ref, store, path):
        ours = one_trip.post(path, content=raw, headers=headers)
        theirs = plain.post(path, content=raw, headers=headers)
        assert ours.status_code >= 400, (name, ours.text)
        assert _comparable(ours) == _comparable(theirs), name
        seen.add(ours.status_code)
    assert seen == {400, 401, 422}
    assert _count(db) == before


def _post_counting_trips(client: TestClient, raw: bytes, headers: dict[str, str]) -> Any:
    """The response, with `trips` set to how many times the request went to the threadpool."""
    counted = 0
    real: Callable[..., Any] = anyio.to_thread.run_sync

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal counted
        counted += 1
        return await real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anyio.to_thread, "run_sync", counting)
        response = client.post(PAYIN, content=raw, headers=headers)
    response.trips = counted
    return response


# Headers whose values differ per request (or per app); their presence is still compared.
_VARYING_HEADERS = {"x-request-id", "content-length", "ratelimit"}


def test_a_good_intake_is_created_and_replayed_either_way_in_one_trip_instead_of_three(
    db: Session, clients, world
) -> None:
    one_trip, plain = clients
    ref, store = world
    created, replayed = [], []
    for client in (one_trip, plain):
        raw = json.dumps(
            {
                "merchant_order_id": f"m-{uuid.uuid4().hex[:10]}",
                "amount_fiat": "1000.00",
                "fiat_currency": ref.fiat.code,
                "customer_id": "c-1",
            }
        ).encode()
        headers = _signed(store, PAYIN, raw)
        created.append(_post_counting_trips(client, raw, headers))
        replayed.append(client.post(PAYIN, content=raw, headers=headers))
    assert [r.status_code for r in created + replayed] == [201] * 4
    assert [r.trips for r in created] == [1, 3]
    for ours, theirs in (created, replayed):
        assert list(ours.json()) == list(theirs.json())  # the same fields in the same order
        assert ours.json()["amount_fiat"] == theirs.json()["amount_fiat"] == "1000.00"
        assert sorted(ours.headers) == sorted(theirs.headers)
        same = {k: v for k, v in ours.headers.items() if k not in _VARYING_HEADERS}
        assert same == {k: v for k, v in theirs.headers.items() if k not in _VARYING_HEADERS}
    assert [r.headers.get("Idempotent-Replayed") for r in replayed] == ["true", "true"]
    assert [r.json() for r in replayed] == [r.json() for r in created]
    assert _count(db) == (2, 2)


def _store_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if "merchant_stores" in s or "store_commissions" in s]


def test_the_store_and_its_commission_are_read_in_the_authenticating_statement(
    db: Session, clients, world
) -> None:
    """The one-trip route reads the store's terms (switches, limits, commissions) and claims the
    Idempotency-Key (its lock and its row) in the statement that checks its signature; FastAPI's
    handler reads the terms again by id and claims the key on its own. Neither reads the key's
    row in a statement of its own, and both write it in the intake's INSERT. Either way a change
    to the terms applies to the next request: the newest commission row, a switch turned off.

    The claim is in the authenticating statement once the process has verified a request of the
    store (its signature is then checked before the statement); the store's first intake claims
    its key in a statement of its own, after the signature verified."""
    one_trip, plain = clients
    ref, store = world

    def payin(client: TestClient, amount: str = "1000.00") -> Any:
        raw = json.dumps(
            {
                "merchant_order_id": f"m-{uuid.uuid4().hex[:10]}",
                "amount_fiat": amount,
                "fiat_currency": ref.fiat.code,
                "customer_id": "c-1",
            }
        ).encode()
        return client.post(PAYIN, content=raw, headers=_signed(store, PAYIN, raw))

    with recorded_statements(db.get_bind()) as statements:
        assert payin(one_trip).status_code == 201
    first_claims = [s for s in statements if "claim_idempotency_key" in s]
    assert len(_store_reads(statements)) == 1
    assert len(first_claims) == 2 and "merchant_stores" not in first_claims[1]
    assert statements.index(first_claims[0]) < statements.index(first_claims[1])

    reads, claims, key_reads, key_writes = [], [], [], []
    for client in (one_trip, plain):
        with recorded_statements(db.get_bind()) as statements:
            assert payin(client).status_code == 201
        reads.append(_store_reads(statements))
        claims.append([s for s in statements if "claim_idempotency_key" in s])
        key_reads.append([s for s in statements if "FROM idempotency_keys" in s])
        key_writes.append([s for s in statements if "INSERT INTO idempotency_keys" in s])
    ours, theirs = reads
    assert len(ours) == 1 and "private_api_key" in ours[0] and "commission_payin" in ours[0]
    assert len(theirs) == 2
    # The Idempotency-Key's claim: in the same statement on the one-trip route, its own otherwise.
    assert claims[0] == ours
    assert len(claims[1]) == 1 and "merchant_stores" not in claims[1][0]
    assert key_reads == [[], []]
    # Either way the key's row is written by the intake's own INSERT, with its audit row.
    for writes in key_writes:
        assert len(writes) == 1 and "INSERT INTO incoming_orders" in writes[0]
        assert "INSERT INTO audit_logs" in writes[0]

    # 1000.00 at 95.5 is 10.47120419 crypto; 5 % of it, then 7 % from the newer row.
    first = [payin(c).json()["store_commission"] for c in clients]
    db.add(
        StoreCommission(store_id=store.store.id, commission_payin=D("7"), commission_payout=D("3"))
    )
    db.commit()
    newer = [payin(c).json()["store_commission"] for c in clients]
    assert first == ["0.52356021"] * 2
    assert newer == ["0.73298429"] * 2

    db.execute(
        update(MerchantStore).where(MerchantStore.id == store.store.id).values(trafic_access=False)
    )
    db.commit()
    refused = [payin(c) for c in clients]
    assert [r.status_code for r in refused] == [403, 403]
    assert [r.json()["code"] for r in refused] == ["store_traffic_disabled"] * 2


def test_a_key_this_process_verified_before_stops_with_the_stores_row(
    db: Session, clients, world
) -> None:
    """The authenticating statement claims the key only for a signature verified before it with
    the private key the process last verified the store's requests with, and only while the
    store's row still holds that key: replaced (here under the same public key), the remembered
    key verifies nothing and claims nothing, and the new one is learnt."""
    one_trip, _ = clients
    ref, store = world

    def payin(world: StoreWorld) -> Any:
        raw = json.dumps(
            {
                "merchant_order_id": f"m-{uuid.uuid4().hex[:10]}",
                "amount_fiat": "1000.00",
                "fiat_currency": ref.fiat.code,
            }
        ).encode()
        return one_trip.post(PAYIN, content=raw, headers=_signed(world, PAYIN, raw))

    assert payin(store).status_code == 201
    replaced = StoreWorld(store.store, store.merchant, store.public_key, "sk_replaced-" + "x" * 32)
    db.execute(
        update(MerchantStore)
        .where(MerchantStore.id == store.store.id)
        .values(private_api_key=replaced.private_key)
    )
    db.commit()

    with recorded_statements(db.get_bind()) as statements:
        refused = payin(store)
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_signature"
    assert len([s for s in statements if "claim_idempotency_key" in s]) == 1  # the store read's
    assert _count(db) == (1, 1)
    with recorded_statements(db.get_bind()) as statements:
        assert payin(replaced).status_code == 201  # claimed after the signature verified
    assert len([s for s in statements if "claim_idempotency_key" in s]) == 2
    with recorded_statements(db.get_bind()) as statements:
        assert payin(replaced).status_code == 201  # claimed in the authenticating statement
    assert len([s for s in statements if "claim_idempotency_key" in s]) == 1
    assert _count(db) == (3, 3)
