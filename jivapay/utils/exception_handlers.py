"""Transitional alias of `jivapay.servers.exception_handlers` (the HTTP layer owns the handlers).

Kept only so branches written before the move still import; new code imports from
`jivapay.servers.exception_handlers`. `tests/test_architecture.py` allows this one module by name;
delete it (and that entry) once no branch uses the old path.
"""

from jivapay.servers.exception_handlers import (
    PROBLEM_JSON,
    PROBLEM_TYPE_BASE,
    problem_response,
    register_exception_handlers,
)

__all__ = ["PROBLEM_JSON", "PROBLEM_TYPE_BASE", "problem_response", "register_exception_handlers"]
