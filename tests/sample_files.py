"""Real receipt files made on the spot (receipts are verified by decoding them whole)."""

from __future__ import annotations

import io
import os


def png_bytes(size: int = 32) -> bytes:
    """A valid PNG of random pixels (so each call is a different file)."""
    from PIL import Image

    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(size: int = 32) -> bytes:
    from PIL import Image

    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


def pdf_bytes(*, javascript: str | None = None) -> bytes:
    """A one-page PDF; with `javascript`, an OpenAction script (which uploads must refuse)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Title": f"receipt {os.urandom(4).hex()}"})
    if javascript is not None:
        writer.add_js(javascript)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
