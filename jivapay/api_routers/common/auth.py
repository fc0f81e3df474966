"""Login routes, one per role server: `POST /{role}/auth/token` (OAuth2 password form: username is
the email) on every role server, support included, so one client logs in everywhere; support also
keeps the plan's `POST /support/auth/login`, which takes JSON `{email, password}` or the same form.
Paths are absolute; the app factory adds the per-route login rate limit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from jivapay.api_routers.deps import client_ip
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import Role
from jivapay.schemas.auth import (
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_EMAIL_LENGTH,
    LoginRequest,
    Token,
)
from jivapay.services.auth_service import AuthResult, login

_REFUSED = problem_responses(
    401, described={401: "Incorrect email or password (every refusal looks the same)"}
)


def _token(result: AuthResult) -> Token:
    return Token(
        access_token=result.access_token,
        token_type=result.token_type,
        expires_in=result.expires_in,
    )


def login_path(role: Role) -> str:
    """Where the role's login route lives."""
    return "/support/auth/login" if role == Role.SUPPORT else f"/{Role(role).value}/auth/token"


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_LOGIN_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {
                            "type": "string",
                            "description": "The email",
                            "minLength": MIN_EMAIL_LENGTH,
                            "maxLength": MAX_EMAIL_LENGTH,
                        },
                        "password": {
                            "type": "string",
                            "format": "password",
                            "minLength": 1,
                            "maxLength": MAX_PASSWORD_LENGTH,
                        },
                    },
                }
            },
        },
    }
}


class PasswordForm:
    """The OAuth2 password form (`username` is the email), with the lengths the login accepts."""

    def __init__(
        self,
        username: Annotated[
            str,
            Form(min_length=MIN_EMAIL_LENGTH, max_length=MAX_EMAIL_LENGTH, description="The email"),
        ],
        password: Annotated[
            str,
            Form(
                min_length=1,
                max_length=MAX_PASSWORD_LENGTH,
                json_schema_extra={"format": "password"},
            ),
        ],
        grant_type: Annotated[str, Form(pattern="^password$")] = "password",
    ) -> None:
        self.username, self.password, self.grant_type = username, password, grant_type


async def _json_or_form_credentials(request: Request) -> LoginRequest:
    """Support's plan login: JSON `{email, password}`, or the OAuth2 form every role takes."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in _FORM_TYPES:
            form = await request.form()
            username, password = form.get("username"), form.get("password")
            return LoginRequest(
                email=username if isinstance(username, str) else "",
                password=password if isinstance(password, str) else "",
            )
        return LoginRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None


def login_router(role: Role) -> APIRouter:
    """The login routes of `role`'s server (support: the OAuth2 form and the JSON login)."""
    role = Role(role)
    router = LosslessJSONRouter(tags=["auth"])

    @router.post(f"/{role.value}/auth/token", response_model=Token, responses=_REFUSED)
    def token_login(request: Request, form: Annotated[PasswordForm, Depends()]) -> Token:
        """OAuth2 password flow: `username` is the email."""
        return _token(
            login(
                email=form.username,
                password=form.password,
                role=role,
                ip_address=client_ip(request),
            )
        )

    if role == Role.SUPPORT:

        @router.post(
            login_path(role),
            response_model=Token,
            responses=_REFUSED,
            openapi_extra=_LOGIN_BODY_DOC,
        )
        async def support_login(request: Request) -> Token:
            """Exchange a support user's email and password (JSON, or the OAuth2 form) for a token."""
            body = await _json_or_form_credentials(request)
            result = await run_in_threadpool(
                login,
                email=body.email,
                password=body.password,
                role=role,
                ip_address=client_ip(request),
            )
            return _token(result)

    return router
