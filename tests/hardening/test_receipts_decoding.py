"""Receipts are verified by decoding the whole file as the type its first bytes claim, and downloads
are always attachments of the verified type."""

from __future__ import annotations

import io
import struct
import zlib
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy.orm import Session

from jivapay.services.document_service import (
    MAX_PDF_DECODED_BYTES,
    MAX_PDF_STREAM_BYTES,
    validate_upload,
)
from jivapay.utils import s3_client
from jivapay.utils.exceptions import UnsupportedFileType
from tests.sample_files import jpeg_bytes, pdf_bytes, png_bytes

LIMIT = 10 * 1024 * 1024


def _flate_pdf(decoded_bytes: int, *, pages: int = 1, streams_per_page: int = 1) -> bytes:
    """Pages whose content is flate-compressed streams of `decoded_bytes` each (one object per
    page, listed `streams_per_page` times in the page's `/Contents` array when more than one)."""
    from pypdf import PdfWriter
    from pypdf.generic import ArrayObject, NameObject, StreamObject

    writer = PdfWriter()
    blob = zlib.compress(b"0" * decoded_bytes, 9)
    for _ in range(pages):
        page = writer.add_blank_page(width=200, height=200)
        stream = StreamObject()
        stream.set_data(blob)
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        ref = writer._add_object(stream)
        contents = ArrayObject([ref] * streams_per_page) if streams_per_page > 1 else ref
        page[NameObject("/Contents")] = contents
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _bomb_pdf(decoded_bytes: int) -> bytes:
    return _flate_pdf(decoded_bytes)


def _object_streams_pdf(count: int, decoded_bytes: int) -> bytes:
    """A one-page PDF 1.5 whose catalog names `count` objects, each alone in an object stream
    padded to `decoded_bytes` (pypdf keeps every object stream it decodes)."""
    out = bytearray(b"%PDF-1.5\n")
    offsets: dict[int, int] = {}

    def add(number: int, body: bytes) -> None:
        offsets[number] = len(out)
        out.extend(b"%d 0 obj\n%s\nendobj\n" % (number, body))

    refs = " ".join(f"{10 + i} 0 R" for i in range(count))
    add(1, f"<< /Type /Catalog /Pages 2 0 R /Extra [{refs}] >>".encode())
    add(2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
    add(3, b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>")
    for i in range(count):
        header = b"%d 0 " % (10 + i)
        blob = zlib.compress(header + b"<< /A 1 >>" + b" " * decoded_bytes, 9)
        add(
            100 + i,
            b"<< /Type /ObjStm /N 1 /First %d /Filter /FlateDecode /Length %d >>\nstream\n"
            % (len(header), len(blob))
            + blob
            + b"\nendstream",
        )
    xref_number = 100 + count
    rows = bytearray()
    for number in range(xref_number + 1):
        if number in offsets:
            rows += struct.pack(">BIH", 1, offsets[number], 0)
        elif 10 <= number < 10 + count:
            rows += struct.pack(">BIH", 2, 100 + number - 10, 0)
        elif number == xref_number:
            rows += struct.pack(">BIH", 1, len(out), 0)
        else:
            rows += struct.pack(">BIH", 0, 0, 0)
    xref = len(out)
    out.extend(
        b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Length %d >>\nstream\n"
        % (xref_number, xref_number + 1, len(rows))
        + rows
        + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % xref
    )
    return bytes(out)


def test_real_files_pass():
    assert validate_upload(png_bytes(), max_bytes=LIMIT) == ("image/png", "png")
    assert validate_upload(jpeg_bytes(), max_bytes=LIMIT) == ("image/jpeg", "jpg")
    assert validate_upload(pdf_bytes(), max_bytes=LIMIT) == ("application/pdf", "pdf")


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
        png_bytes()[:60],  # truncated
        b"\xff\xd8\xff\xe0<html></html>",
        b"%PDF-1.7\n<html><script>alert(1)</script></html>",
    ],
    ids=["png-header-then-html", "truncated-png", "jpeg-header-then-html", "pdf-header-then-html"],
)
def test_a_forged_body_behind_a_good_header_is_refused(data: bytes):
    with pytest.raises(UnsupportedFileType):
        validate_upload(data, max_bytes=LIMIT)


def _pdf_with_filter(name: str) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import NameObject, StreamObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=100, height=100)
    stream = StreamObject()
    stream.set_data(b"not encoded with anything")
    stream[NameObject("/Filter")] = NameObject(name)
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_whose_page_content_is_not_compressed_passes():
    from PIL import Image

    converted = io.BytesIO()
    Image.new("RGB", (60, 40), "white").save(converted, format="PDF")  # a photo saved as PDF

    assert validate_upload(converted.getvalue(), max_bytes=LIMIT) == ("application/pdf", "pdf")


def test_pdf_with_an_unknown_filter_is_refused_not_a_crash():
    with pytest.raises(UnsupportedFileType) as caught:
        validate_upload(_pdf_with_filter("/Bogus"), max_bytes=LIMIT)

    assert caught.value.code == "invalid_file"


def test_pdf_with_javascript_is_refused():
    with pytest.raises(UnsupportedFileType) as caught:
        validate_upload(pdf_bytes(javascript="app.alert('hi');"), max_bytes=LIMIT)

    assert caught.value.code == "active_content"


def test_pdf_deflate_bomb_is_refused_without_inflating_it():
    bomb = _bomb_pdf(64 * 1024 * 1024)
    assert len(bomb) < 200_000  # small on the wire

    with pytest.raises(UnsupportedFileType):
        validate_upload(bomb, max_bytes=LIMIT)


def test_pdf_pages_each_under_the_stream_cap_are_refused_past_the_total():
    # Each page's stream stays under the per-stream cap; together they pass the total.
    pages, each = 8, 19 * 1024 * 1024
    bomb = _flate_pdf(each, pages=pages)
    assert len(bomb) < 200 * 1024
    assert each < MAX_PDF_STREAM_BYTES and pages * each > MAX_PDF_DECODED_BYTES

    with pytest.raises(UnsupportedFileType) as caught:
        validate_upload(bomb, max_bytes=LIMIT)

    assert caught.value.code == "invalid_file"
    assert "decodes to more than" in caught.value.message


def test_a_page_listing_one_stream_many_times_counts_every_listing():
    bomb = _flate_pdf(19 * 1024 * 1024, streams_per_page=8)
    assert len(bomb) < 50 * 1024

    with pytest.raises(UnsupportedFileType):
        validate_upload(bomb, max_bytes=LIMIT)


def test_object_streams_count_towards_the_total():
    bomb = _object_streams_pdf(8, 19 * 1024 * 1024)
    assert len(bomb) < 200 * 1024

    with pytest.raises(UnsupportedFileType):
        validate_upload(bomb, max_bytes=LIMIT)


def test_a_multi_page_receipt_with_real_content_passes():
    statement = _flate_pdf(200 * 1024, pages=10)  # 200 KB of drawing per page, 2 MB in all
    small_object_streams = _object_streams_pdf(3, 10 * 1024)

    assert validate_upload(statement, max_bytes=LIMIT) == ("application/pdf", "pdf")
    assert validate_upload(small_object_streams, max_bytes=LIMIT) == ("application/pdf", "pdf")


def test_image_pixel_bomb_is_refused():
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")  # 400 megapixels, tiny file

    with pytest.raises(UnsupportedFileType):
        validate_upload(out.getvalue(), max_bytes=LIMIT)


def test_download_urls_force_an_attachment_of_the_verified_type(db: Session, s3_endpoint: str):
    url = s3_client.presigned_url("receipts/ord_x/abc.png", content_type="image/png")

    query = parse_qs(urlparse(url).query)
    assert query["response-content-disposition"] == ['attachment; filename="abc.png"']
    assert query["response-content-type"] == ["image/png"]
