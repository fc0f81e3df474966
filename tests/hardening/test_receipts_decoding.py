"""Receipts are verified by decoding the whole file as the type its first bytes claim, and downloads
are always attachments of the verified type."""

from __future__ import annotations

import io
import zlib
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy.orm import Session

from jivapay.services.document_service import validate_upload
from jivapay.utils import s3_client
from jivapay.utils.exceptions import UnsupportedFileType
from tests.sample_files import jpeg_bytes, pdf_bytes, png_bytes

LIMIT = 10 * 1024 * 1024


def _bomb_pdf(decoded_bytes: int) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import NameObject, StreamObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=200, height=200)
    stream = StreamObject()
    stream.set_data(zlib.compress(b"0" * decoded_bytes, 9))
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


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


def test_pdf_with_javascript_is_refused():
    with pytest.raises(UnsupportedFileType) as caught:
        validate_upload(pdf_bytes(javascript="app.alert('hi');"), max_bytes=LIMIT)

    assert caught.value.code == "active_content"


def test_pdf_deflate_bomb_is_refused_without_inflating_it():
    bomb = _bomb_pdf(64 * 1024 * 1024)
    assert len(bomb) < 200_000  # small on the wire

    with pytest.raises(UnsupportedFileType):
        validate_upload(bomb, max_bytes=LIMIT)


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
