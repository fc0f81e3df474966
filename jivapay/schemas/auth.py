"""API shapes of authentication: the login request (support's JSON login), the token answer, and
the current user (`GET /{role}/me`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from jivapay.enums import Role

MIN_EMAIL_LENGTH, MAX_EMAIL_LENGTH = 3, 320
MAX_PASSWORD_LENGTH = 1024


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(
        min_length=MIN_EMAIL_LENGTH, max_length=MAX_EMAIL_LENGTH, examples=["support@example.com"]
    )
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="Seconds until the token expires")


class MeRead(BaseModel):
    id: int = Field(description="User id")
    email: str
    role: Role
    profile_id: int = Field(description="Id of the role profile (merchant id, trader id ...)")
    permissions: list[str] = Field(
        default_factory=list, description="Granted permissions (admin, support, teamlead)"
    )
