"""Languages of the payer's page: ru, en and kk message catalogs (`jivapay/locale/*.po`, compiled
in memory by Babel at first use), the choice from `?lang=` or `Accept-Language`, and one Jinja2
environment per language with its translations and locale-aware money and date filters.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import resources

from babel import Locale, negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import Translations
from jinja2 import Environment, PackageLoader, select_autoescape

LANGUAGES: dict[str, str] = {"ru": "Русский", "en": "English", "kk": "Қазақша"}
DEFAULT_LANGUAGE = "ru"


def choose_language(requested: str | None, accept_language: str | None) -> str:
    """`?lang=` when it names a supported language, else the best `Accept-Language` match."""
    if requested in LANGUAGES:
        return requested
    preferred = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            preferred.append((quality, tag.replace("_", "-")))
    ordered = [tag for _, tag in sorted(preferred, key=lambda item: -item[0])]
    return negotiate_locale(ordered, list(LANGUAGES), sep="-") or DEFAULT_LANGUAGE


@cache
def translations(language: str) -> Translations:
    """The language's catalog, compiled from its `.po` file."""
    source = resources.files("jivapay") / "locale" / language / "LC_MESSAGES" / "messages.po"
    with source.open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


@cache
def environment(language: str) -> Environment:
    """Jinja2 templates of `jivapay/templates/pay`, translated into `language`."""
    env = Environment(
        loader=PackageLoader("jivapay", "templates"),
        autoescape=select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    locale = Locale.parse(language)
    env.filters["money"] = lambda amount, currency: money(amount, currency, language)
    env.filters["utc_datetime"] = lambda moment: format_datetime(
        moment, "medium", tzinfo=UTC, locale=locale
    )
    env.filters["card_groups"] = group_number
    env.globals["languages"] = LANGUAGES
    return env


def money(amount: Decimal, currency: str, language: str) -> str:
    """`1 000,00 ₸` / `₸1,000.00`: the exact amount, grouped, with the currency sign."""
    return format_currency(amount, currency, locale=language, currency_digits=False)


def group_number(number: str) -> str:
    """A card/account number in groups of four digits, for reading aloud and retyping."""
    digits = number.replace(" ", "")
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def iso(moment: datetime | None) -> str:
    """An aware timestamp as ISO 8601 in UTC, for the page's script."""
    return moment.astimezone(UTC).isoformat() if moment else ""
