"""Schemathesis (property-based tests from each server's own OpenAPI document) against all six
servers, in process over ASGI with the real PostgreSQL and Redis: every operation of every server,
a bounded number of generated requests each, checked by every schemathesis check but one.

The run is schemathesis' own engine (what `st run` does), one per server so a failure names it:

- phases: `examples` (the documents' examples), `coverage` (each declared constraint at and just
  past its boundary, each required parameter missing, wrong types, undeclared methods and media
  types) and `fuzzing` (MAX_EXAMPLES random requests per operation, positive and negative), with
  shrinking off and a fixed seed so the time stays bounded and a failure reproduces. `stateful`
  is off: FastAPI documents declare no links, so it would only replay fuzzing at a multiple of
  the cost. The coverage phase probes only the undeclared methods in UNEXPECTED_METHODS.
- checks: all of them (`not_a_server_error`, `status_code_conformance`, `content_type_conformance`,
  `response_headers_conformance`, `response_schema_conformance`, `positive_data_acceptance`,
  `negative_data_rejection`, `missing_required_header`, `unsupported_method`,
  `allow_header_conformance`, `use_after_free`, `ensure_resource_availability`,
  `object_level_authorization`) except `ignored_auth`: the JWT servers' wrapper below always
  authenticates, so that check would see credentials the case did not carry (authentication
  itself is pinned by tests/api/test_auth.py and the authorization matrices). Three of the
  enabled checks have nothing to judge in this setup and pass vacuously: `use_after_free` and
  `ensure_resource_availability` look at sequences of calls, which only the stateful phase makes,
  and `object_level_authorization` replays reads as other identities of a schemathesis auth
  provider, which the wrapper replaces (another owner's object answering 404 is pinned by the
  tests/api ownership and authorization-matrix tests).
- two refinements, each for a rule no document can state. Generated strings carry no NUL
  character (`allow_x00=False`): every server refuses NUL anywhere with 422 before routing,
  because PostgreSQL text cannot hold it (tests/hardening/test_inputs.py). And a schema-valid
  request refused with a 422 in DATA_DEPENDENT_422 (an unknown currency, method or bank, amounts
  outside the store's limits) does not count as "valid data rejected": those depend on the
  reference tables and the store's settings. Any other 422, `validation_failed` above all, fails.

Requests are authenticated by a thin ASGI wrapper. Gateway requests are signed with a real store's
keys after the body is known (a "hook" at the transport): each of `X-API-Key`, `X-Timestamp`,
`X-Signature` the request carries with a value of its documented shape is replaced by the real
one; one it does not carry stays missing and one of another shape stays as generated, so negative
and "missing required header" requests reach the server as they were generated. Role servers get
a bearer token of a real user of their role. Rate limits and the failed-authentication IP block are
lifted for the run. `-s` prints each server's operations, requests and time.
"""

from __future__ import annotations

import importlib
import re
import time
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.specs.openapi.checks import RejectedPositiveData
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jivapay.enums import Role
from jivapay.security import compute_signature, create_access_token
from jivapay.servers.app_factory import ServerName
from jivapay.utils.config_loader import invalidate_cache, set_config_value
from tests.factories import StoreWorld, make_bank_method, make_reference, make_store, make_user

# Random requests per operation in the fuzzing phase; the coverage phase adds its boundary cases
# on top (a few dozen per operation).
MAX_EXAMPLES = 5
PHASES = ["examples", "coverage", "fuzzing"]
# Methods the coverage phase sends where the document declares none: OPTIONS (checks `Allow`),
# TRACE (served nowhere) and DELETE (which most paths lack). Each path gets those it does not
# declare.
UNEXPECTED_METHODS = {"options", "trace", "delete"}
EXCLUDED_CHECKS = ["ignored_auth"]
# A generated value of the document's shape stands for the right one; any other stays as generated
# (and earns its 401).
_VALID_SHAPE = {
    b"x-api-key": re.compile(r".*", re.DOTALL),
    b"x-timestamp": re.compile(r"[0-9]{1,12}"),
    b"x-signature": re.compile(r"[0-9a-fA-F]{64}"),
}


class SignedGateway:
    """Signs every request with a real store's keys (the body is read first, then replayed).

    Only the signature headers the request carries are replaced: a request generated without one
    reaches the server without it."""

    def __init__(self, app: ASGIApp, store: StoreWorld) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"] + (f"?{query}" if query else "")
        ts = str(int(time.time()))
        signature = compute_signature(self.store.private_key, ts, scope["method"], path, body)
        real = {
            b"x-api-key": self.store.public_key.encode(),
            b"x-timestamp": ts.encode(),
            b"x-signature": signature.encode(),
        }
        headers = []
        for name, value in scope["headers"]:
            name = name.lower()
            if name in real and _VALID_SHAPE[name].fullmatch(value.decode("latin-1")):
                value = real[name]
            headers.append((name, value))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


class Bearer:
    """Adds `Authorization: Bearer <token>` to every request."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def _wrapped_app(server: str, db: Session) -> ASGIApp:
    for key in ("RATE_LIMIT_DEFAULT", "RATE_LIMIT_GATEWAY", "RATE_LIMIT_GATEWAY_INIT"):
        set_config_value(db, key, "1000000/minute")
    set_config_value(db, "RATE_LIMIT_LOGIN", "1000000/minute")
    # Generated requests without credentials must answer 401, not the IP block they would earn.
    set_config_value(db, "RATE_LIMIT_BLOCK_AFTER_VIOLATIONS", "1000000")
    app = importlib.import_module(f"jivapay.servers.{server}.server").app
    app.openapi_schema = None
    if server == ServerName.GATEWAY:
        ref = make_reference(db)
        make_bank_method(db, ref)
        wrapped: ASGIApp = SignedGateway(app, make_store(db, ref))
    else:
        user = make_user(db, Role(server))
        wrapped = Bearer(app, create_access_token(user.id, Role(server)))
    db.commit()
    invalidate_cache()
    return wrapped


# 422s that depend on stored data, which no document can state: the currencies, methods and banks
# in the reference tables, the store's own currency and amount limits, and the amount converted at
# the stored rate (`amount_out_of_range`). `positive_data_acceptance`
# counts them as "valid data rejected"; any other 422 (`validation_failed` above all) still fails.
DATA_DEPENDENT_422 = frozenset(
    {
        "unknown_currency",
        "unknown_payment_method",
        "unknown_bank",
        "method_not_available",
        "currency_mismatch",
        "amount_out_of_limits",
        "amount_out_of_range",
    }
)


def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """Drop a positive-data failure whose 422 is a refusal that depends on stored data."""
    if isinstance(failure, RejectedPositiveData) and response.status_code == 422:
        try:
            code = response.json().get("code")
        except ValueError:
            return True
        return code not in DATA_DEPENDENT_422
    return True


def _describe(recorder: Any, case_id: str, name: str, failure: Any) -> str:
    case = recorder.cases[case_id].value
    interaction = recorder.interactions.get(case_id)
    response = interaction.response if interaction is not None else None
    answered = f"{response.status_code} {response.content[:300]!r}" if response is not None else "-"
    phase = case.meta.phase.name if case.meta is not None else "-"
    mode = case.meta.generation.mode if case.meta is not None else "-"
    return (
        f"{recorder.label} [{name}, {phase}/{mode}] {failure.title}\n{failure.message[:800]}\n"
        f"  answered: {answered}"
    )


def run_schemathesis(app: ASGIApp, max_examples: int = MAX_EXAMPLES) -> tuple[int, int, list[str]]:
    """One engine run over `app`'s document: (operations, requests, failures described)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.hook(filter_failure)
    schema.config.phases.update(phases=PHASES)
    schema.config.phases.coverage.unexpected_methods = UNEXPECTED_METHODS
    schema.config.checks.update(excluded_check_names=EXCLUDED_CHECKS)
    schema.config.generation.update(
        max_examples=max_examples, no_shrink=True, deterministic=True, allow_x00=False
    )
    operations: set[str] = set()
    requests = 0
    failures: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            operations.add(recorder.label)
            requests += len(recorder.interactions)
            for case_id, nodes in recorder.checks.items():
                for node in nodes:
                    if node.failure_info is None:
                        continue
                    failure = node.failure_info.failure
                    key = (recorder.label, node.name, failure.title)
                    if key not in seen:
                        seen.add(key)
                        failures.append(_describe(recorder, case_id, node.name, failure))
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            failures.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            failures.extend(f"after run: {f.title}: {f.message}" for f in event.failures)
    return len(operations), requests, failures


@pytest.mark.parametrize("server", [s.value for s in ServerName])
def test_every_operation_answers_as_documented(db: Session, server: str) -> None:
    started = time.monotonic()
    operations, requests, failures = run_schemathesis(_wrapped_app(server, db))
    print(
        f"schemathesis {server}: {operations} operations, {requests} requests, "
        f"{time.monotonic() - started:.0f} s, {len(failures)} failures"
    )

    assert operations > 2 and requests > operations
    assert not failures, f"{server}: {len(failures)} failures\n\n" + "\n\n".join(failures)
