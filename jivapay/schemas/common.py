"""Shapes shared by every API: pages of results, strict request bodies, money in (strict decimal
strings with place limits) and out (strings), and the `changed` flag of state changes."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from jivapay.money import MAX_CRYPTO, MAX_FIAT

T = TypeVar("T")

# Amounts leave the API as JSON strings so no client parses them through a float.
Money = Annotated[
    Decimal, PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json")
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# --------------------------------------------------------------------------- request building blocks
# Shared by every role API so that bodies, money and "did anything change" read the same everywhere.

_DECIMAL_TEXT = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def _strict_decimal(value: Any) -> Decimal:
    # Only ASCII digits with an optional fraction, or an exact JSON integer/Decimal: no floats,
    # exponents, signs, underscores, spaces or non-ASCII digits, so what the client wrote is the
    # amount that is stored.
    if isinstance(value, bool | float):
        raise ValueError('must be a decimal string such as "1500.00", not a float')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("must be finite")
        return value
    if isinstance(value, str) and value.isascii() and _DECIMAL_TEXT.match(value):
        return Decimal(value)
    raise ValueError('must be a decimal string of ASCII digits such as "1500.00"')


def _places(limit: int) -> Any:
    def check(value: Decimal) -> Decimal:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > limit:
            raise ValueError(f"at most {limit} decimal places")
        return value

    return AfterValidator(check)


_STRICT = BeforeValidator(_strict_decimal)
_AS_TEXT = PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json")
_DOC = WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"})

FiatAmountIn = Annotated[Decimal, _STRICT, _places(2), Field(gt=0, le=MAX_FIAT), _AS_TEXT, _DOC]
"""A positive fiat amount, at most 2 places."""
CryptoAmountIn = Annotated[Decimal, _STRICT, _places(8), Field(gt=0, le=MAX_CRYPTO), _AS_TEXT, _DOC]
"""A positive crypto amount, at most 8 places."""
PercentIn = Annotated[Decimal, _STRICT, _places(4), Field(ge=0, lt=100), _AS_TEXT, _DOC]
"""A percentage: 0 ≤ % < 100, at most 4 places."""
FiatLimitIn = Annotated[Decimal, _STRICT, _places(2), Field(ge=0, le=MAX_FIAT), _AS_TEXT, _DOC]
"""A non-negative fiat limit (a lower limit may be 0), at most 2 places."""


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


def refuse_nul(data: Any) -> Any:
    """A body must be a JSON object without a NUL character anywhere (PostgreSQL text cannot hold
    it). FastAPI validates bodies from attributes too, so `1.5` would otherwise pass as `{}`."""
    if not isinstance(data, dict | BaseModel):
        raise ValueError("must be a JSON object")
    if _contains_nul(data):
        raise ValueError("text must not contain NUL characters")
    return data


class RequestBody(BaseModel):
    """Base of every request body: unknown fields are refused (422), strings are not coerced,
    NUL characters are refused."""

    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return refuse_nul(data)


class ReasonIn(RequestBody):
    reason: str = Field(min_length=1, max_length=2000)


class Changed(BaseModel):
    """What a state-changing route answers besides the new state: `false` when it was a repeat."""

    changed: bool
