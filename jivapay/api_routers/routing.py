"""How every server's routes read a JSON body: numbers parsed straight into `Decimal`, never a float.

Starlette would read `100.10` as a float before the models see it, and the money fields refuse a
float (`schemas.common.FiatAmountIn` and the others) rather than guess the amount it stood for.
`LosslessJSONRequest` keeps the number exactly as written, so an amount, a limit, a percentage or
a rate is accepted as a JSON string or a JSON number alike (docs/money.md, "Representation").

Every router is a `LosslessJSONRouter`, whose routes are `LosslessJSONRoute`s; routes with their own
class subclass it (the gateway's `OneTripIntakeRoute`). `tests/test_architecture.py` checks every
route of every server, so a router built another way cannot be served.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

# A number longer than this, or whose decimal exponent is beyond ±this, stays the text it was
# written as. Amounts have at most 18 integer digits and 8 places and integers fit 64 bits, so
# nothing valid comes near; but Pydantic turns a `Decimal` into an `int` by expanding it, and
# `1e-99999999` or a 1 MiB literal would take minutes of CPU there (json.loads caps integer
# literals at 4,300 digits for the same reason). Text costs nothing: the decimal fields refuse it
# (not their pattern, or too many places), as they refuse NaN and Infinity, and an integer field
# parses it as a string (in linear time) or refuses it.
MAX_NUMBER_CHARS = 100


def _number(text: str) -> Decimal | str:
    if len(text) > MAX_NUMBER_CHARS:
        return text
    try:
        value = Decimal(text)
    except InvalidOperation:  # an exponent beyond what `decimal` represents at all
        return text
    return value if abs(value.adjusted()) <= MAX_NUMBER_CHARS else text


def loads(text: str) -> Any:
    """A JSON document with its numbers exact: integers as `int`, the others as `Decimal` (or their
    text when absurdly long or large, see `MAX_NUMBER_CHARS`); NaN and Infinity stay strings, which
    the decimal fields refuse. Never a float."""
    return json.loads(text, parse_float=_number, parse_constant=str)


class LosslessJSONRequest(Request):
    """A request whose JSON body keeps numbers exact: floats become `Decimal`, never `float`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                # Malformed JSON is 422 in FastAPI; a body that is not UTF-8 is malformed JSON too.
                raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None
            self._json = loads(text)
        return self._json


class LosslessJSONRoute(APIRoute):
    """A route whose endpoint and dependencies see a `LosslessJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def lossless_handler(request: Request) -> Response:
            return await handler(LosslessJSONRequest(request.scope, request.receive))

        return lossless_handler


class LosslessJSONRouter(APIRouter):
    """The router of every server: its routes are `LosslessJSONRoute`s unless a `route_class`
    (itself a `LosslessJSONRoute`) is given."""

    def __init__(self, *, route_class: type[APIRoute] = LosslessJSONRoute, **kwargs: Any) -> None:
        if not issubclass(route_class, LosslessJSONRoute):
            raise TypeError(f"{route_class.__name__} does not parse JSON numbers as Decimal")
        super().__init__(route_class=route_class, **kwargs)
