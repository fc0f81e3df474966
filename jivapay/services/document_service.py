"""Receipts and dispute evidence (`uploaded_documents`): checking an upload, storing it
in S3, recording it, attaching it to an order transition, and handing out short-lived read URLs.

Checks, before anything is written: not empty, at most `RECEIPT_MAX_BYTES` (413 `file_too_large`),
and a JPEG, PNG or PDF by the file's own first bytes (415 `unsupported_file_type`) that decodes
whole as that type: Pillow loads every pixel of an image (at most `MAX_IMAGE_PIXELS`), pypdf parses
a PDF with limits (pages, objects, bytes per decoded stream, decoded bytes in all) and refuses
scripts, actions and attachments (415 `invalid_file`/`active_content`). The type and name a client declares are ignored;
downloads are always `Content-Disposition: attachment` with the verified type. Keys are `receipts/{order_public_id}/{uuid4}.{ext}`, never derived
from the client's file name.

Order of operations, so that a failure changes nothing:

1. validate every file (no network, no lock);
2. upload to S3 (no row lock is held during the call; an S3 failure is a 502/503 and the request's
   transaction rolls back, so the order keeps its status);
3. the state transition (locks the order row) and the `uploaded_documents` rows, in the request's
   transaction.

An uploaded object is registered on the session; if that session's transaction then rolls back or
is closed without a commit, the object is deleted (best effort, logged). Objects orphaned anyway (the
process died between upload and commit, or the delete failed) are private and unreferenced: they
cost storage only, and a sweep may delete `receipts/` objects older than a day that no
`uploaded_documents` row names. A repeated transition that already happened stores nothing: its
files are discarded.

Who may read a document: whoever may see its order (`query_filters.orders_visible_to`: the assigned
trader, the owning merchant, a teamlead for the team, staff with `orders:view:all`), the owning
store by API key, and the payer, through the order's public id, for the payer's own receipts only.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import OrderHistory, UploadedDocument
from jivapay.database.utils import call_after_rollback, forget_after_rollback
from jivapay.enums import DocumentKind, OrderType
from jivapay.schemas.documents import DocumentRead
from jivapay.security import Principal, StorePrincipal
from jivapay.services import order_status_manager as osm
from jivapay.services.audit_logger import log_event
from jivapay.utils import s3_client
from jivapay.utils.config_loader import runtime_settings, standalone_runtime_settings
from jivapay.utils.exceptions import (
    FileTooLarge,
    JivaPayException,
    NotFound,
    UnsupportedFileType,
    ValidationFailed,
)
from jivapay.utils.query_filters import orders_visible_to

if TYPE_CHECKING:
    import pypdf

log = structlog.get_logger(__name__)

KEY_PREFIX = "receipts"
URL_TTL_SECONDS = 300
MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo of a receipt is plenty
MAX_PDF_PAGES = 50
MAX_PDF_OBJECTS = 20_000
MAX_PDF_STREAM_BYTES = 20 * 1024 * 1024
# What the check may decode in all: the object streams pypdf keeps decoded while it parses, plus
# every page's content streams (each decoded, counted and dropped in turn, so memory holds one
# at a time). A bank's receipt decodes to
# tens of kilobytes a page and even a 50-page statement of vector text to a few megabytes, so real
# files stay far below; without a total, 50 pages of streams at the per-stream cap is gigabytes of
# decoding (zlib inflates ~1000:1) from one anonymous upload. One stream at the cap still fits.
MAX_PDF_DECODED_BYTES = 50 * 1024 * 1024
MAX_FILES_PER_REQUEST = 5
# Files one order keeps in all: a repeated dispute or confirmation adds its files (evidence), so
# without a bound one caller could pile up storage on an order.
MAX_DOCUMENTS_PER_ORDER = 25

# (leading bytes, content type, extension): the only formats accepted.
_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"%PDF-", "application/pdf", "pdf"),
)


@dataclass(frozen=True)
class FileUpload:
    """A file as a request carried it (the client's declared content type is not kept)."""

    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class StagedUpload:
    """A file already in S3 whose row is not written yet."""

    kind: DocumentKind
    key: str
    content_type: str
    size: int
    sha256: str
    filename: str | None


@dataclass(frozen=True)
class PayerCapability:
    """The anonymous payer, who proves nothing but knowing the order's public id."""

    public_id: str


Viewer = Principal | StorePrincipal | PayerCapability


# --------------------------------------------------------------------------- checks


def max_upload_bytes(session: Session | None = None) -> int:
    """The largest file accepted (`RECEIPT_MAX_BYTES`), through `session` when the caller has one."""
    settings = runtime_settings(session) if session is not None else standalone_runtime_settings()
    return settings.RECEIPT_MAX_BYTES


def detect_file_type(data: bytes) -> tuple[str, str]:
    """(content type, extension) of a JPEG, PNG or PDF by its leading bytes; else 415."""
    for magic, content_type, ext in _SIGNATURES:
        if data.startswith(magic):
            return content_type, ext
    raise UnsupportedFileType("only JPEG, PNG and PDF files are accepted")


def validate_upload(data: bytes, *, max_bytes: int | None = None) -> tuple[str, str]:
    """Refuse an empty, oversize, unsupported or undecodable file; (content type, extension)."""
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    if not data:
        raise ValidationFailed("the file is empty", code="empty_file")
    if len(data) > limit:
        raise FileTooLarge(f"the file is larger than {limit} bytes", extra={"max_bytes": limit})
    content_type, ext = detect_file_type(data)
    if content_type == "application/pdf":
        _verify_pdf(data)
    else:
        _verify_image(data, content_type)
    return content_type, ext


def _undecodable(kind: str) -> UnsupportedFileType:
    return UnsupportedFileType(f"the file is not a valid {kind}", code="invalid_file")


def _verify_image(data: bytes, content_type: str) -> None:
    """The whole image decodes as the type its first bytes claim, within a pixel budget."""
    from PIL import Image

    expected = {"image/jpeg": "JPEG", "image/png": "PNG"}[content_type]
    try:
        with Image.open(io.BytesIO(data), formats=[expected]) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise _undecodable("image of a sensible size")
            image.load()  # decodes every pixel: a truncated or forged body fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _undecodable(expected) from exc


# PDF keys that run code or carry other files: a receipt needs none of them.
_PDF_ACTIVE_KEYS = frozenset(
    {"/JS", "/JavaScript", "/Launch", "/EmbeddedFile", "/EmbeddedFiles", "/RichMedia", "/XFA"}
)


def _pdf_limits() -> pypdf.Configuration:
    """pypdf's per-stream limits, each at `MAX_PDF_STREAM_BYTES`: every decoder with a large
    expansion ratio stops there instead of filling memory (the documented `pypdf.Configuration`,
    applied to this check only rather than process-wide)."""
    import pypdf

    return pypdf.Configuration(
        maximum_declared_stream_length=MAX_PDF_STREAM_BYTES,
        array_based_stream_maximum_output_length=MAX_PDF_STREAM_BYTES,
        zlib_maximum_output_length=MAX_PDF_STREAM_BYTES,
        lzw_maximum_output_length=MAX_PDF_STREAM_BYTES,
        run_length_maximum_output_length=MAX_PDF_STREAM_BYTES,
        jbig2_maximum_output_length=MAX_PDF_STREAM_BYTES,
        image_maximum_buffer_size=MAX_PDF_STREAM_BYTES,
    )


def _verify_pdf(data: bytes) -> None:
    """A PDF that parses within limits, every page's content decodes within a total budget, and
    nothing active inside."""
    import pypdf
    from pypdf.errors import PyPdfError
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    try:
        with pypdf.apply_configuration(_pdf_limits()):
            reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
            budget = _DecodeBudget()
            _decode_object_streams(reader, budget)
            if len(reader.pages) > MAX_PDF_PAGES:
                raise _undecodable(f"receipt (more than {MAX_PDF_PAGES} pages)")
            seen: set[int] = set()
            stack: list[object] = [reader.trailer]
            visited = 0
            while stack:
                node = stack.pop()
                visited += 1
                if visited > MAX_PDF_OBJECTS:
                    raise _undecodable("receipt (too many objects)")
                if isinstance(node, IndirectObject):
                    if node.idnum in seen:
                        continue
                    seen.add(node.idnum)
                    stack.append(node.get_object())
                elif isinstance(node, DictionaryObject):
                    if _PDF_ACTIVE_KEYS.intersection(node.keys()):
                        raise UnsupportedFileType(
                            "PDFs with scripts, actions or attachments are refused",
                            code="active_content",
                        )
                    if node.get("/S") in ("/JavaScript", "/Launch"):
                        raise UnsupportedFileType(
                            "PDFs with scripts or actions are refused", code="active_content"
                        )
                    stack.extend(node.values())
                elif isinstance(node, ArrayObject):
                    stack.extend(node)
            _decode_page_contents(reader, budget)
    except UnsupportedFileType:
        raise
    except (
        PyPdfError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        RecursionError,
        NotImplementedError,  # a filter pypdf does not know: not a receipt a bank produces
    ) as exc:
        raise _undecodable("PDF") from exc


class _DecodeBudget:
    """Bytes decoded so far from one PDF, refused past `MAX_PDF_DECODED_BYTES`."""

    def __init__(self) -> None:
        self.used = 0

    def charge(self, decoded: bytes) -> None:
        self.used += len(decoded)
        if self.used > MAX_PDF_DECODED_BYTES:
            raise _undecodable(
                f"receipt (it decodes to more than {MAX_PDF_DECODED_BYTES >> 20} MB)"
            )


def _decode_object_streams(reader: pypdf.PdfReader, budget: _DecodeBudget) -> None:
    """Decode every object stream (`/ObjStm`) the cross-reference names, within the budget.

    pypdf decodes an object stream when it first resolves an object in it, and keeps the result
    for the reader's lifetime; done here first, before the page tree or the object walk resolves
    anything, the total kept is charged (pypdf then reuses what it cached, nothing is decoded
    twice)."""
    from pypdf.generic import StreamObject

    for number in sorted({entry[0] for entry in reader.xref_objStm.values()}):
        stream = reader.get_object(number)
        if isinstance(stream, StreamObject):
            budget.charge(stream.get_data())


def _decode_page_contents(reader: pypdf.PdfReader, budget: _DecodeBudget) -> None:
    """Decode every content stream of every page, one at a time, within the budget.

    Each stream is decoded with `decode_stream_data`, which keeps nothing (`page.get_contents()`
    would cache every decoded stream on the reader and join a page's streams into one more copy);
    a stream listed twice is decoded and counted twice."""
    from pypdf.filters import decode_stream_data
    from pypdf.generic import ArrayObject, NullObject, StreamObject

    for page in reader.pages:
        contents = page.get("/Contents")
        if contents is None:
            continue
        contents = contents.get_object()
        parts = contents if isinstance(contents, ArrayObject) else [contents]
        for part in parts:
            stream = part.get_object()
            if isinstance(stream, NullObject):
                continue
            if not isinstance(stream, StreamObject):
                raise _undecodable("PDF")
            if not stream.get("/Filter"):
                # Stored as is (scanners and image converters write such pages): its bytes are
                # its content; `decode_stream_data` refuses a stream without a filter.
                budget.charge(stream.get_data())
                continue
            budget.charge(decode_stream_data(stream))  # counted, then dropped


def object_key(order_public_id: str, ext: str) -> str:
    return f"{KEY_PREFIX}/{order_public_id}/{uuid.uuid4()}.{ext}"


def _read(upload: bytes | IO[bytes] | FileUpload) -> bytes:
    if isinstance(upload, FileUpload):
        return upload.data
    return upload if isinstance(upload, bytes) else upload.read()


def _discard_label(key: str) -> str:
    return f"s3 delete {key}"


def _delete_quietly(key: str) -> None:
    try:
        s3_client.delete_file(key)
        log.info("upload_discarded", key=key)
    except JivaPayException as exc:
        log.warning("upload_orphaned", key=key, error=exc.message)


# --------------------------------------------------------------------------- storing


def stage_upload(
    session: Session,
    *,
    order: OrderHistory,
    kind: DocumentKind,
    upload: bytes | IO[bytes] | FileUpload,
    filename: str | None = None,
) -> StagedUpload:
    """Validate and upload one file; deleted again unless `session` commits. Hold no row lock."""
    data = _read(upload)
    content_type, ext = validate_upload(data, max_bytes=max_upload_bytes(session))
    key = object_key(order.public_id, ext)
    result = s3_client.upload_file(data, key, content_type=content_type)
    call_after_rollback(session, lambda: _delete_quietly(key), label=_discard_label(key))
    if filename is None and isinstance(upload, FileUpload):
        filename = upload.filename
    return StagedUpload(kind, key, content_type, result.size, result.sha256, filename)


def record_upload(
    session: Session,
    *,
    order: OrderHistory,
    staged: StagedUpload,
    uploaded_by_user_id: int | None,
    ip_address: str | None = None,
    reason: str | None = None,
) -> UploadedDocument:
    """Write the `uploaded_documents` row of a staged file (flushes); `ip_address`: the
    uploading client's, and `reason` the one it was sent with when no status change records it,
    for the audit row."""
    row = UploadedDocument(
        order_id=order.id,
        uploaded_by_user_id=uploaded_by_user_id,
        kind=staged.kind.value,
        s3_key=staged.key,
        content_type=staged.content_type,
        size_bytes=staged.size,
        sha256=staged.sha256,
    )
    session.add(row)
    session.flush()
    log_event(
        session,
        action="document.uploaded",
        user_id=uploaded_by_user_id,
        target_entity="order",
        target_id=order.public_id,
        details={
            "document_id": row.id,
            "kind": staged.kind.value,
            "content_type": staged.content_type,
            "size": staged.size,
            "sha256": staged.sha256,
            "filename": (staged.filename or "")[:200] or None,
            **({"reason": reason} if reason else {}),
        },
        ip_address=ip_address,
    )
    return row


def discard_upload(session: Session, *, staged: StagedUpload) -> None:
    """Delete a staged file that will not be recorded."""
    forget_after_rollback(session, _discard_label(staged.key))
    _delete_quietly(staged.key)


def store_document(
    session: Session,
    *,
    order: OrderHistory,
    kind: DocumentKind,
    upload: bytes | IO[bytes] | FileUpload,
    filename: str | None = None,
    uploaded_by_user_id: int | None,
) -> UploadedDocument:
    """Validate, upload and record one document of `order` (call without holding its row lock)."""
    staged = stage_upload(session, order=order, kind=kind, upload=upload, filename=filename)
    return record_upload(
        session, order=order, staged=staged, uploaded_by_user_id=uploaded_by_user_id
    )


# --------------------------------------------------------------------------- transitions with files


def _find_order(session: Session, public_id: str) -> OrderHistory:
    order = session.scalars(select(OrderHistory).where(OrderHistory.public_id == public_id)).first()
    if order is None:
        raise NotFound("order not found")
    return order


def transition_with_documents(
    session: Session,
    *,
    public_id: str,
    event: osm.OrderEvent,
    actor: osm.Actor,
    kind: DocumentKind,
    uploads: Sequence[FileUpload],
    required: bool = False,
    reason: str | None = None,
) -> osm.TransitionResult:
    """Apply `event` with files attached: check, upload, then transition and record in one go.

    A repeat (the transition had already happened: this request retried, or another actor's got
    there first) answers the current state and still keeps the files it brought, which are
    evidence of the order whoever moved it (a PayOut's transfer receipt, a dispute's evidence);
    a file the order already holds is not stored twice."""
    order = _find_order(session, public_id)
    first = osm.check_transition(order, event=event, actor=actor)
    if first and required and not uploads:
        raise ValidationFailed("a receipt file is required", code="receipt_required")
    if not uploads:
        return osm.transition(session, public_id=public_id, event=event, actor=actor, reason=reason)
    if len(uploads) > MAX_FILES_PER_REQUEST:
        raise ValidationFailed(
            f"at most {MAX_FILES_PER_REQUEST} files per request", code="too_many_files"
        )
    limit = max_upload_bytes(session)
    for upload in uploads:  # every file is checked before the first one is uploaded
        validate_upload(upload.data, max_bytes=limit)
    staged = [stage_upload(session, order=order, kind=kind, upload=u) for u in uploads]
    result = osm.transition(session, public_id=public_id, event=event, actor=actor, reason=reason)
    if not result.changed:
        staged = _new_to_the_order(session, order=order, staged=staged)
    for item in staged:
        record_upload(
            session,
            order=order,
            staged=item,
            uploaded_by_user_id=actor.user_id,
            ip_address=actor.ip_address,
            reason=None if result.changed else reason,
        )
    return result


def _new_to_the_order(
    session: Session, *, order: OrderHistory, staged: list[StagedUpload]
) -> list[StagedUpload]:
    """The staged files of a repeat that the order does not hold yet (the others are discarded);
    `too_many_documents` (422) past `MAX_DOCUMENTS_PER_ORDER`, since a repeat may be sent at will.
    Runs under the order's row lock (`osm.transition` took it), so parallel repeats count right."""
    on_file = session.scalars(
        select(UploadedDocument.sha256).where(UploadedDocument.order_id == order.id)
    ).all()
    held, count = set(on_file), len(on_file)
    new: list[StagedUpload] = []
    for item in staged:
        if item.sha256 in held:
            discard_upload(session, staged=item)
        else:
            held.add(item.sha256)
            new.append(item)
    if count + len(new) > MAX_DOCUMENTS_PER_ORDER:
        raise ValidationFailed(
            f"an order keeps at most {MAX_DOCUMENTS_PER_ORDER} files", code="too_many_documents"
        )
    return new


def confirm_with_receipt(
    session: Session, *, public_id: str, actor: osm.Actor, receipt: FileUpload | None
) -> osm.TransitionResult:
    """Trader (or staff) confirmation; a PayOut needs the receipt of the transfer sent."""
    order = _find_order(session, public_id)
    return transition_with_documents(
        session,
        public_id=public_id,
        event=osm.OrderEvent.CONFIRM,
        actor=actor,
        kind=DocumentKind.TRADER_RECEIPT,
        uploads=[receipt] if receipt else [],
        required=order.order_type == OrderType.PAYOUT,
    )


def payer_confirm_with_receipt(
    session: Session,
    *,
    public_id: str,
    receipt: FileUpload | None,
    required: bool,
    dispute_reason: str | None = None,
    ip_address: str | None = None,
) -> osm.TransitionResult:
    """The payer's PayIn confirmation with the receipt the store may require; with a
    `dispute_reason` (a fraud rule stopped it), a dispute instead, the receipt checked and kept
    all the same as its evidence. `ip_address`: the payer's, as the request came."""
    return transition_with_documents(
        session,
        public_id=public_id,
        event=osm.OrderEvent.PAYER_CONFIRM if dispute_reason is None else osm.OrderEvent.DISPUTE,
        actor=osm.Actor(osm.ActorKind.PAYER, ip_address=ip_address),
        kind=DocumentKind.CLIENT_RECEIPT,
        uploads=[receipt] if receipt else [],
        required=required,
        reason=dispute_reason,
    )


def dispute_with_evidence(
    session: Session,
    *,
    public_id: str,
    actor: osm.Actor,
    reason: str | None,
    evidence: Sequence[FileUpload] = (),
) -> osm.TransitionResult:
    """Open a dispute, attaching optional evidence files."""
    return transition_with_documents(
        session,
        public_id=public_id,
        event=osm.OrderEvent.DISPUTE,
        actor=actor,
        kind=DocumentKind.DISPUTE_EVIDENCE,
        uploads=evidence,
        reason=reason,
    )


# --------------------------------------------------------------------------- reading


def _signed(key: str, content_type: str | None = None) -> str | None:
    try:
        return s3_client.presigned_url(
            key, expires_seconds=URL_TTL_SECONDS, content_type=content_type
        )
    except JivaPayException as exc:  # a view must still render when storage is misconfigured
        log.warning("document_url_unavailable", key=key, error=exc.message)
        return None


def _view(row: UploadedDocument) -> DocumentRead:
    return DocumentRead(
        id=row.id,
        kind=DocumentKind(row.kind),
        url=_signed(row.s3_key, row.content_type),
        content_type=row.content_type,
        size=row.size_bytes,
        sha256=row.sha256,
        created_at=row.created_at,
    )


def views_by_order(session: Session, *, order_ids: Sequence[int]) -> dict[int, list[DocumentRead]]:
    """The documents of each order, oldest first, with fresh presigned URLs (one query)."""
    if not order_ids:
        return {}
    rows = session.scalars(
        select(UploadedDocument)
        .where(UploadedDocument.order_id.in_(set(order_ids)))
        .order_by(UploadedDocument.created_at, UploadedDocument.id)
    ).all()
    views: dict[int, list[DocumentRead]] = {}
    for row in rows:
        assert row.order_id is not None
        views.setdefault(row.order_id, []).append(_view(row))
    return views


def document_views(session: Session, *, order_id: int) -> list[DocumentRead]:
    """The documents of one order with fresh presigned URLs."""
    return views_by_order(session, order_ids=[order_id]).get(order_id, [])


def _may_read(session: Session, viewer: Viewer, doc: UploadedDocument) -> bool:
    if doc.order_id is None:
        return False
    stmt = select(OrderHistory.id).where(OrderHistory.id == doc.order_id)
    if isinstance(viewer, PayerCapability):
        if doc.kind != DocumentKind.CLIENT_RECEIPT:
            return False
        stmt = stmt.where(OrderHistory.public_id == viewer.public_id)
    elif isinstance(viewer, StorePrincipal):
        stmt = stmt.where(OrderHistory.store_id == viewer.store_id)
    else:
        stmt = stmt.where(orders_visible_to(viewer))
    return session.scalar(stmt) is not None


def document_url(session: Session, *, document_id: int, viewer: Viewer) -> str:
    """A short-lived download URL of a document `viewer` may read; anything else is 404."""
    doc = session.get(UploadedDocument, document_id)
    if doc is None or not _may_read(session, viewer, doc):
        raise NotFound("document not found")
    return s3_client.presigned_url(
        doc.s3_key, expires_seconds=URL_TTL_SECONDS, content_type=doc.content_type
    )
