"""Process-wide logging: structlog for our code, stdlib logging routed through the same pipeline.

`configure_logging(process)` makes every line one JSON object (or a readable console line when
`LOG_JSON` is false) whoever emitted it: our structlog loggers, uvicorn, Celery, SQLAlchemy. Values
bound with `structlog.contextvars` (the request id bound by the request-context middleware) appear
on every line logged while they are bound, and card numbers and secrets are scrubbed from every
line. Safe to call more than once: the second call replaces what the first installed.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from jivapay.config import get_settings
from jivapay.utils.notifications import scrub

# Third-party loggers that install their own handlers; they must propagate to ours instead.
_ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery")
# Floor levels: the request-context middleware writes the access line (with request id and route
# template), and SQLAlchemy at INFO logs every mapper step and statement.
_FLOOR_LEVELS = {"uvicorn.access": logging.WARNING, "sqlalchemy": logging.WARNING}


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is now (test runners swap it), never a stale stream."""

    jivapay_handler = True

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _add_process(process: str) -> Processor:
    def add_process(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("process", process)
        return event_dict

    return add_process


def scrub_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Mask card numbers and filter secret-looking keys in the whole event (message included)."""
    cleaned: EventDict = scrub(event_dict)
    return cleaned


def _renderer(json_lines: bool) -> Processor:
    if json_lines:
        return structlog.processors.JSONRenderer(default=str)
    return structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(process: str) -> None:
    """Configure structlog and stdlib logging for this process (idempotent)."""
    settings = get_settings()
    level = logging.getLevelNamesMapping().get(settings.LOG_LEVEL.upper(), logging.INFO)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(process),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a second configure (tests, `jivapay up`) must reach loggers already used.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_processor,
            _renderer(settings.LOG_JSON),
        ],
    )
    # Nothing renders the caller's file and line, thread or process name of a record (the
    # process is `add_process`'s), and finding them costs a frame walk and lookups per line: the
    # optimisations the logging documentation lists.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = _StdoutHandler()
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "jivapay_handler", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True
        routed.setLevel(logging.NOTSET)
    for name, floor in _FLOOR_LEVELS.items():
        logging.getLogger(name).setLevel(max(level, floor))


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger (same as `structlog.get_logger`), for callers that want one import."""
    return structlog.get_logger(name, **initial)
