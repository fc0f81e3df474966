"""Shapes shared by every API: pages of results, strict request bodies, money in (strict decimal
strings with place limits) and out (strings), http(s) URLs and IP addresses in, and the `changed`
flag of state changes. Each input type's JSON Schema states exactly what the server accepts."""

from __future__ import annotations

import ipaddress
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


def decimal_pattern(*, places: int, int_digits: int, positive: bool) -> str:
    """The regular expression of the decimal strings a money field accepts: at most `int_digits`
    significant integer digits (leading zeros are free), at most `places` decimals and, when
    `positive`, not zero. Written without lookaheads so that generators can draw from it."""
    fraction = rf"(?:\.[0-9]{{1,{places}}})?"
    if not positive:
        return rf"^0*[0-9]{{1,{int_digits}}}{fraction}$"
    # A zero integer part needs a non-zero digit among the first `places` decimals.
    small = "|".join(f"0{{{k}}}[1-9][0-9]{{0,{places - 1 - k}}}" for k in range(places))
    return rf"^(?:0*[1-9][0-9]{{0,{int_digits - 1}}}{fraction}|0+\.(?:{small}))$"


def _money_in(places: int, limit: Any, int_digits: int, *, positive: bool) -> Any:
    pattern = decimal_pattern(places=places, int_digits=int_digits, positive=positive)
    return Annotated[
        Decimal,
        BeforeValidator(_strict_decimal),
        _places(places),
        limit,
        _AS_TEXT,
        WithJsonSchema({"type": "string", "pattern": pattern}),
    ]


_AS_TEXT = PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json")

# MAX_FIAT is 10^18 - 0.01 and MAX_CRYPTO 10^12 - 10^-8: 18 and 12 integer digits.
FiatAmountIn = _money_in(2, Field(gt=0, le=MAX_FIAT), 18, positive=True)
"""A positive fiat amount, at most 2 places."""
CryptoAmountIn = _money_in(8, Field(gt=0, le=MAX_CRYPTO), 12, positive=True)
"""A positive crypto amount, at most 8 places."""
PercentIn = _money_in(4, Field(ge=0, lt=100), 2, positive=False)
"""A percentage: 0 ≤ % < 100, at most 4 places."""
FiatLimitIn = _money_in(2, Field(ge=0, le=MAX_FIAT), 18, positive=False)
"""A non-negative fiat limit (a lower limit may be 0), at most 2 places."""


# An absolute http(s) URL of ASCII characters: DNS labels or IPv4 digits as host, a port 1-65535, then
# RFC 3986 path, query and fragment characters. International hosts come as punycode. The same
# pattern is the documented JSON Schema and the check, so whatever the document allows is accepted
# and the callback client (httpx) can always parse it.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_PCHAR = r"[A-Za-z0-9._~!$&'()*+,;=:@%-]"
HTTP_URL_PATTERN = (
    rf"^https?://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?(?:/(?:{_PCHAR}|/)*)?"
    rf"(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?$"
)
MAX_URL_LENGTH = 2000


def _unstripped(value: Any) -> Any:
    # Checked before a model's `str_strip_whitespace` could turn " https://a" into a match.
    if isinstance(value, str) and value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


# The before-validator goes last: it still runs first, and pydantic keeps the pattern in the schema.
HttpUrlIn = Annotated[
    str,
    Field(max_length=MAX_URL_LENGTH, pattern=HTTP_URL_PATTERN),
    BeforeValidator(_unstripped),
]
"""An absolute http(s) URL (`HTTP_URL_PATTERN`), at most 2000 characters."""


def _ip_address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an IP address string")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


IpAddressIn = Annotated[
    str,
    BeforeValidator(_ip_address),
    WithJsonSchema({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
]
"""An IPv4 or IPv6 address, stored in its canonical form."""


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in JSON)
        return False
    return True


def _contains_nul(value: Any) -> bool:
    # Iterative: a 1 KB body nested 400 deep must not raise RecursionError (a 500).
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or not _utf8(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def refuse_nul(data: Any) -> Any:
    """A body must be a JSON object without a NUL character anywhere (PostgreSQL text cannot hold
    it). FastAPI validates bodies from attributes too, so `1.5` would otherwise pass as `{}`."""
    if not isinstance(data, dict | BaseModel):
        raise ValueError("must be a JSON object")
    if _contains_nul(data):
        raise ValueError("text must not contain NUL characters or lone surrogates")
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
