"""Files in requests: the payer's and trader's `receipt`, and the body of a dispute, which is either
JSON `{"reason": ...}` or multipart with a `reason` form field and `evidence` files.

FastAPI cannot take a JSON body and files in one request, so these dependencies read the body
themselves: multipart when the Content-Type says so, JSON (or nothing) otherwise. Each file is read
up to `RECEIPT_MAX_BYTES` + 1 bytes and refused beyond (413); a request whose Content-Length already
exceeds what the files could need is refused before its body is parsed. Requests without a
Content-Length are parsed by Starlette, which spools large parts to disk: production caps request
bodies at the reverse proxy as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from jivapay.services import document_service
from jivapay.services.document_service import MAX_FILES_PER_REQUEST, FileUpload
from jivapay.utils.exceptions import FileTooLarge, ValidationFailed

RECEIPT_FIELD = "receipt"
EVIDENCE_FIELD = "evidence"
REASON_FIELD = "reason"
_FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and the reason field


@dataclass(frozen=True)
class ReasonAndFiles:
    reason: str | None
    files: list[FileUpload]


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _max_bytes() -> int:
    return await run_in_threadpool(document_service.max_upload_bytes)


def _guard_length(request: Request, *, max_bytes: int, files: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > files * max_bytes + _FORM_OVERHEAD_BYTES:
        raise FileTooLarge(
            f"the request is larger than {files} file(s) of {max_bytes} bytes",
            extra={"max_bytes": max_bytes},
        )


async def read_upload(file: UploadFile, *, max_bytes: int) -> FileUpload:
    """The bytes of `file`, refusing it as soon as it exceeds `max_bytes`."""
    try:
        data = await file.read(max_bytes + 1)
    finally:
        await file.close()
    if len(data) > max_bytes:
        raise FileTooLarge(
            f"the file is larger than {max_bytes} bytes", extra={"max_bytes": max_bytes}
        )
    return FileUpload(data=data, filename=file.filename)


async def _read_form(request: Request, *, max_files: int, allowed: frozenset[str]) -> FormData:
    """The multipart form, refusing (422) a malformed one or one with fields other than `allowed`.

    Starlette answers a malformed form 400; it is a body that does not match the operation's
    schema, refused like malformed JSON."""
    try:
        form = await request.form(max_files=max_files, max_fields=len(allowed) + 3)
    except HTTPException as exc:
        if exc.status_code != 400:
            raise
        raise ValidationFailed(f"malformed multipart body: {exc.detail}") from None
    unknown = set(form.keys()) - allowed
    if unknown:
        raise ValidationFailed(f"unexpected form fields: {', '.join(sorted(unknown))}")
    return form


def _as_file(value: Any, field: str) -> UploadFile:
    # Starlette's form gives its own UploadFile class, which FastAPI's subclasses.
    if not hasattr(value, "read") or not hasattr(value, "filename"):
        raise ValidationFailed(f"{field!r} must be a file part", code="file_expected")
    return value


async def receipt_upload(request: Request) -> FileUpload | None:
    """The optional multipart `receipt` file; a JSON or empty body carries none."""
    if not _is_multipart(request):
        return None
    max_bytes = await _max_bytes()
    _guard_length(request, max_bytes=max_bytes, files=1)
    form = await _read_form(request, max_files=1, allowed=frozenset({RECEIPT_FIELD}))
    value = form.get(RECEIPT_FIELD)
    if value is None or value == "":
        return None
    return await read_upload(_as_file(value, RECEIPT_FIELD), max_bytes=max_bytes)


def reason_and_evidence(
    model: type[BaseModel],
) -> Callable[[Request], Awaitable[ReasonAndFiles]]:
    """A dependency reading `{reason}` as JSON (validated by `model`) or multipart with files."""

    async def dependency(request: Request) -> ReasonAndFiles:
        if not _is_multipart(request):
            body = await request.body()
            if not body.strip():
                return ReasonAndFiles(reason=None, files=[])
            try:
                data = model.model_validate_json(body)
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]
                ) from exc
            return ReasonAndFiles(reason=getattr(data, REASON_FIELD, None), files=[])
        max_bytes = await _max_bytes()
        _guard_length(request, max_bytes=max_bytes, files=MAX_FILES_PER_REQUEST)
        form = await _read_form(
            request,
            max_files=MAX_FILES_PER_REQUEST,
            allowed=frozenset({REASON_FIELD, EVIDENCE_FIELD}),
        )
        raw_reason = form.get(REASON_FIELD)
        if raw_reason is not None and not isinstance(raw_reason, str):
            raise ValidationFailed(f"{REASON_FIELD!r} must be a text field")
        try:
            reason = model.model_validate({REASON_FIELD: raw_reason or None})
        except ValidationError as exc:
            raise RequestValidationError(
                [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]
            ) from exc
        files = [
            await read_upload(_as_file(value, EVIDENCE_FIELD), max_bytes=max_bytes)
            for value in form.getlist(EVIDENCE_FIELD)
        ]
        return ReasonAndFiles(reason=getattr(reason, REASON_FIELD, None), files=files)

    return dependency


def _binary(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


RECEIPT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        RECEIPT_FIELD: _binary("JPEG, PNG or PDF; type detected from the bytes")
                    },
                }
            }
        },
    }
}


def reason_and_evidence_openapi(json_schema_ref: str) -> dict[str, Any]:
    """OpenAPI of a body that is JSON `{reason}` or multipart `reason` + `evidence` files."""
    return {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"$ref": json_schema_ref}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            REASON_FIELD: {"type": "string", "maxLength": 1000},
                            EVIDENCE_FIELD: {
                                "type": "array",
                                "maxItems": MAX_FILES_PER_REQUEST,
                                "items": _binary("JPEG, PNG or PDF"),
                            },
                        },
                    }
                },
            },
        }
    }
