"""Document shapes: a receipt or dispute evidence as an order view lists it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from jivapay.enums import DocumentKind


class DocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: DocumentKind
    url: str | None = Field(
        description="Presigned download URL, valid for a few minutes; null if it cannot be signed"
    )
    content_type: str
    size: int = Field(description="Size in bytes")
    sha256: str
    created_at: datetime
