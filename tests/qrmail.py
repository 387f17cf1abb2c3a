"""Codes and messages for the QR tests, made by the tests themselves: segno draws the QR
codes, Pillow writes PNG, JPEG, GIF, WebP and PDF files, and `raw_pdf` writes PDFs by hand
where a hostile structure is the point (10,000 pages, nested forms, a broken cross-reference).
"""

from __future__ import annotations

import io
import zlib
from email.message import EmailMessage
from email.policy import SMTP

import segno
from PIL import Image


def qr_image(text: str, scale: int = 6, canvas: tuple[int, int] | None = None) -> Image.Image:
    """A QR code for `text`, optionally pasted onto a larger white canvas (a flyer, a page)."""
    buf = io.BytesIO()
    segno.make(text, error="m", micro=False).save(buf, kind="png", scale=scale, border=4)
    code = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    if canvas is None:
        return code
    page = Image.new("L", canvas, 255)
    page.paste(code, ((canvas[0] - code.width) // 2, canvas[1] // 3))
    return page


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def png(text: str, **kw: object) -> bytes:
    return encode(qr_image(text, **kw), "PNG")  # type: ignore[arg-type]


def jpeg(text: str, **kw: object) -> bytes:
    return encode(qr_image(text, **kw).convert("RGB"), "JPEG", quality=90)  # type: ignore[arg-type]


def pdf_pages(pages: list[str | None], size: tuple[int, int] = (850, 1100)) -> bytes:
    """A PDF of len(pages) pages (Pillow: one image per page); a page with a text holds a QR
    code of it, a None page is blank."""
    images = [
        qr_image(text, canvas=size).convert("RGB") if text else Image.new("RGB", size, "white")
        for text in pages
    ]
    return encode(images[0], "PDF", save_all=True, append_images=images[1:], resolution=100.0)


def message(
    *,
    subject: str = "Your invoice",
    from_: str = "Billing <billing@shop.example>",
    text: str = "Please see the attachment.",
    html: str | None = None,
    attachments: tuple[tuple[bytes, str, str, str], ...] = (),
    inline: tuple[tuple[bytes, str, str], ...] = (),
) -> bytes:
    """attachments: (data, maintype, subtype, filename); inline: (data, subtype, content-id)
    for images the HTML shows as cid:."""
    msg = EmailMessage()
    msg["From"] = from_
    msg["To"] = "you@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = "<qr-test@shop.example>"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
        if inline:
            related = msg.get_payload()[1]  # type: ignore[index]
            for data, subtype, cid in inline:
                related.add_related(data, "image", subtype, cid=f"<{cid}>")
    for data, maintype, subtype, filename in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


# --------------------------------------------------------------------------- raw PDFs


def raw_pdf(objects: list[bytes], *, xref: bool = True) -> bytes:
    """A PDF of the given object bodies (object 1 is the catalog)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    if xref:
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % start
    return bytes(out)


def stream(head: bytes, content: bytes, compress: bool = False) -> bytes:
    if compress:
        content = zlib.compress(content)
        head += b" /Filter /FlateDecode"
    return b"<< " + head + b" /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"


def many_pages(count: int) -> bytes:
    """A PDF of `count` blank pages sharing one content stream."""
    first = 4
    kids = b" ".join(b"%d 0 R" % (first + i) for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % count,
        stream(b"", b"0 0 1 1 re f"),
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>"
    objects += [page] * count
    return raw_pdf(objects)


def nested_forms(depth: int, fan: int = 10) -> bytes:
    """One page drawing a form that draws the next one `fan` times, `depth` levels deep:
    fan ** depth drawings from a file of a few kilobytes."""
    draw = b" ".join([b"/F Do"] * fan)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /XObject << /F 5 0 R >> >> >>",
        stream(b"", draw),
    ]
    for level in range(depth):
        last = level == depth - 1
        resources = b"" if last else b"/Resources << /XObject << /F %d 0 R >> >>" % (6 + level)
        head = b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] " + resources
        objects.append(stream(head, b"0 0 1 1 re f" if last else draw))
    return raw_pdf(objects)


def pdf_image_bomb(side: int) -> bytes:
    """One page drawing a side x side grey image, compressed to almost nothing."""
    row = b"\xff" * side
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    head = b"/Type /XObject /Subtype /Image /Width %d /Height %d " % (side, side)
    head += b"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode"
    image = b"<< " + head + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /XObject << /I 5 0 R >> >> >>",
            stream(b"", b"q 612 0 0 792 0 0 cm /I Do Q"),
            image,
        ]
    )


def vector_qr_pdf(text: str, caption: bytes = b"Scan to pay your invoice") -> bytes:
    """One page with a caption in Helvetica and a QR code for `text` drawn as filled
    rectangles: no image anywhere, so only rendering the page shows the code."""
    matrix = segno.make(text, error="m", micro=False).matrix
    module, left, top = 4, 200, 600
    boxes = [
        b"%d %d %d %d re" % (left + x * module, top - y * module, module, module)
        for y, row in enumerate(matrix)
        for x, dark in enumerate(row)
        if dark
    ]
    content = b"BT /F1 14 Tf 72 720 Td (" + caption + b") Tj ET\n0 g\n" + b"\n".join(boxes) + b"\nf"
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            stream(b"", content, compress=True),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def huge_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit PNG of width x height white pixels, `rows` of them written (all by default):
    a decompression bomb (kilobytes in, width x height pixels out)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    body = zlib.compressobj(9)
    data = b"".join(body.compress(row) for _ in range(height if rows is None else rows))
    data += body.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def resized_jpeg(width: int, height: int) -> bytes:
    """A small JPEG whose frame header says width x height (what a reader allocates)."""
    import struct

    data = bytearray(encode(Image.new("L", (64, 64), 255), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
