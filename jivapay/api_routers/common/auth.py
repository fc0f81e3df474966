"""Login routes, one per role server: `POST /{role}/auth/token` (OAuth2 password form: username is
the email) for merchant, trader, teamlead and admin, and `POST /support/auth/login` (JSON) for
support. Paths are absolute; the app factory adds the per-route login rate limit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from jivapay.enums import Role
from jivapay.schemas.auth import LoginRequest, Token
from jivapay.servers.exception_handlers import PROBLEM_JSON
from jivapay.services.auth_service import AuthResult, login

_REFUSED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Incorrect email or password (every refusal looks the same)",
        "content": {PROBLEM_JSON: {}},
    }
}


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _token(result: AuthResult) -> Token:
    return Token(
        access_token=result.access_token,
        token_type=result.token_type,
        expires_in=result.expires_in,
    )


def login_path(role: Role) -> str:
    """Where the role's login route lives."""
    return "/support/auth/login" if role == Role.SUPPORT else f"/{Role(role).value}/auth/token"


def login_router(role: Role) -> APIRouter:
    """The login route of `role`'s server."""
    role = Role(role)
    router = APIRouter(tags=["auth"])

    if role == Role.SUPPORT:

        @router.post(login_path(role), response_model=Token, responses=_REFUSED)
        def support_login(request: Request, body: LoginRequest) -> Token:
            """Exchange a support user's email and password for a bearer token."""
            return _token(
                login(
                    email=body.email,
                    password=body.password,
                    role=role,
                    ip_address=_client_ip(request),
                )
            )

    else:

        @router.post(login_path(role), response_model=Token, responses=_REFUSED)
        def token_login(
            request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
        ) -> Token:
            """OAuth2 password flow: `username` is the email."""
            return _token(
                login(
                    email=form.username,
                    password=form.password,
                    role=role,
                    ip_address=_client_ip(request),
                )
            )

    return router
