"""Response shapes of merchant callback deliveries (`GET /gateway/callbacks`, re-send).

Built by `callback_service` itself (one shape per resource). The page also says whether the store's callbacks are
disabled and why (a 410 from the endpoint disables them; a re-send enables them again).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from jivapay.enums import CallbackStatus


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CallbackAttemptRead(_Read):
    attempted_at: datetime
    status_code: int | None = Field(description="HTTP status answered; null on a network error")
    duration_ms: int | None
    error: str | None
    response_excerpt: str | None = Field(description="The first 1 KB of the answer's body")


class CallbackDeliveryRead(_Read):
    id: int
    event_id: str = Field(description="Sent as `webhook-id` and as `id` in the payload")
    event_type: str = Field(examples=["order.completed"])
    order_id: str = Field(description="The order's public id")
    status: CallbackStatus
    url: str | None
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempts: list[CallbackAttemptRead]


class CallbackDeliveryPage(_Read):
    items: list[CallbackDeliveryRead]
    total: int
    limit: int
    offset: int
    callbacks_disabled_at: datetime | None = Field(
        description="When the store's callbacks were disabled (null: enabled)"
    )
    callbacks_disabled_reason: str | None
