"""The decoder process: images and PDF pages in, the QR and other 2-D codes on them out.

Run as `python -m filters.qr_worker` by filters/qr.py, never imported by the scanning process.
Image and PDF decoders are large C libraries fed hostile bytes (libwebp, libpng, PDFium have
all had memory-safety bugs), and one PDF of a few kilobytes can make PDFium parse for minutes
(form XObjects that draw each other ten times, ten levels deep). So they run here, in a
process of their own with an address-space limit, which the scanner stops when a message's
time is up. A crash or a kill costs one message's codes (a limit finding), never the scan.

Libraries: Pillow opens PNG, JPEG, GIF, WebP and BMP (JPEG decodes at 1/2 to 1/8 scale on
request, so large photos cost little); PDFium (pypdfium2) renders PDF pages; zxing-cpp finds
and decodes QR, Micro QR, rMQR, Data Matrix, Aztec, PDF417 and MaxiCode symbols. All three
ship as wheels with their native code inside: nothing to install from the system.

Protocol (stdin/stdout): frames of a 4-byte big-endian length and a JSON object; a request
frame is followed by the payload bytes it announces. JSON both ways, so that a compromised
decoder cannot make the scanner execute anything (pickle would).
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import IO, Any

MIN_SIDE = 21  # pixels: a version 1 QR code at one pixel per module; anything smaller is an icon
MAX_TEXT = 2048  # characters of one decoded code kept
MAX_CODES = 20  # codes kept per image or page
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
MAX_PAGE_IMAGES = 500  # image objects of one PDF page looked at for their size

Frame = dict[str, Any]


def _limit_self(max_memory_mb: int) -> None:
    """Die with the scanner (Linux), cap the address space, and leave Ctrl-C to the scanner."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if max_memory_mb > 0:
        try:
            import resource

            limit = max_memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass


def _palette_on_white(image: Any) -> Any:
    """The palette image with a grey palette: each entry the grey its colour shows on white,
    its transparency (one index, or an alpha per index) mixed in. Converting that to grey
    is one lookup per pixel."""
    rgb = image.getpalette("RGB") or []
    if not rgb:
        return image
    alpha = [255] * (len(rgb) // 3)
    if image.palette is not None and image.palette.mode == "RGBA":
        alpha = (image.getpalette("RGBA") or [])[3::4][: len(alpha)]
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and 0 <= transparency < len(alpha):
        alpha[transparency] = 0
    elif isinstance(transparency, bytes):
        alpha[: len(transparency)] = transparency[: len(alpha)]
    greys: list[int] = []
    for index, a in enumerate(alpha):
        r, g, b = rgb[3 * index : 3 * index + 3]
        luma = (r * 299 + g * 587 + b * 114) / 1000  # what convert("L") computes
        value = round((luma * a + 255 * (255 - a)) / 255)
        greys += (value, value, value)
    out = image.copy()
    out.info.pop("transparency", None)
    out.putpalette(greys)
    return out


def _on_white(image: Any, factor: int) -> Any:
    """An image with alpha as grey on white: reduced as grey and alpha (two channels, not
    four), then pasted on white through its alpha."""
    from PIL import Image

    la = image.convert("LA")
    la = la.reduce(factor) if factor > 1 else la
    grey, alpha = la.split()
    white = Image.new("L", la.size, 255)
    white.paste(grey, mask=alpha)
    return white


class _Oversized(Exception):
    """A PDF page draws an image larger than max_image_pixels."""


class Decoder:
    """One message's payloads, decoded in order within its caps."""

    def __init__(self, settings: dict[str, Any], deadline: float) -> None:
        import zxingcpp
        from PIL import Image

        self.s = settings
        self.deadline = deadline
        self.images_left = int(settings["max_images"])
        self.pages_left = int(settings["max_pdf_pages"])
        self.zx = zxingcpp
        self.formats = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.AllMatrix)
        Image.MAX_IMAGE_PIXELS = int(settings["max_image_pixels"])

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline

    # --- codes in a picture ---

    def codes(self, image: Any) -> list[dict[str, str]]:
        # QR, Data Matrix and Aztec finders work at any angle; try_rotate would only add the
        # quarter turns of PDF417, at a third more time for every image.
        found = self.zx.read_barcodes(image, formats=self.formats, try_rotate=False)
        out = []
        for code in found[:MAX_CODES]:
            text = code.text[:MAX_TEXT]
            if text:
                out.append({"text": text, "format": str(code.format).replace(" ", "")})
        return out

    def scaled(self, image: Any) -> Any:
        """Grey, on white where transparent, and no larger than scan_pixels. Each form is
        made the cheapest way that keeps its look: a palette image through a grey palette
        (one table lookup per pixel, where converting it to RGBA first cost three times as
        much), an image with alpha as grey and alpha, reduced, then laid on white."""
        w, h = image.size
        factor = math.ceil(math.sqrt(w * h / int(self.s["scan_pixels"])))
        if image.mode == "P":
            grey = _palette_on_white(image).convert("L")
        elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            return _on_white(image, factor)
        else:
            grey = image.convert("L")
        return grey.reduce(factor) if factor > 1 else grey

    # --- one payload ---

    def image(self, data: bytes) -> Frame:
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            w, h = image.size
        except Image.DecompressionBombError:
            return {"hits": ["qr.max_image_pixels"]}
        except Exception:
            return {"hits": ["qr.unreadable"]}
        if min(w, h) < MIN_SIDE:
            return {}
        if w * h > int(self.s["max_image_pixels"]):
            return {"hits": ["qr.max_image_pixels"]}
        if self.images_left <= 0:
            return {"hits": ["qr.max_images"]}
        self.images_left -= 1
        try:
            if image.format == "JPEG":
                # Decode at the smallest 1/2..1/8 scale that still gives scan_pixels.
                side = math.sqrt(int(self.s["scan_pixels"]) / (w * h))
                image.draft("L", (max(1, int(w * side)), max(1, int(h * side))))
            image.load()
            return {"codes": [dict(c, page="") for c in self.codes(self.scaled(image))]}
        except Image.DecompressionBombError:
            return {"hits": ["qr.max_image_pixels"]}
        except Exception:  # truncated, corrupt, an unsupported variant
            return {"hits": ["qr.unreadable"]}

    def pdf(self, data: bytes) -> Frame:
        import pypdfium2 as pdfium

        try:
            doc = pdfium.PdfDocument(data)
        except Exception:  # corrupt, encrypted, not a PDF after all
            return {"hits": ["qr.unreadable"]}
        hits: list[str] = []
        codes: list[dict[str, str]] = []
        try:
            count = len(doc)
            if count > self.pages_left:
                hits.append("qr.max_pdf_pages")
            for index in range(min(count, self.pages_left)):
                if self.out_of_time():
                    hits.append("qr.max_seconds")
                    break
                self.pages_left -= 1
                try:
                    found = self.page(doc, index)
                except _Oversized:
                    hits.append("qr.max_image_pixels")
                    continue
                except Exception:
                    hits.append("qr.unreadable")
                    continue
                codes.extend(dict(c, page=str(index + 1)) for c in found)
        finally:
            doc.close()
        return {"codes": codes, "hits": hits}

    def oversized_image(self, page: Any) -> bool:
        """An image on the page (or in its forms, two levels down) over max_image_pixels:
        PDFium would decode all of it to draw it small. The walk itself is capped."""
        import pypdfium2.raw as pdfium_c

        limit = int(self.s["max_image_pixels"])
        objects = page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2)
        for seen, image in enumerate(objects):
            if seen >= MAX_PAGE_IMAGES:
                return False
            w, h = image.get_px_size()
            if w * h > limit:
                return True
        return False

    def page(self, doc: Any, index: int) -> list[dict[str, str]]:
        page = doc[index]
        try:
            if self.oversized_image(page):
                raise _Oversized
            return self.rendered(page)
        finally:
            page.close()

    def rendered(self, page: Any) -> list[dict[str, str]]:
        """The codes on the page drawn at pdf_dpi, or smaller to stay within scan_pixels."""
        import pypdfium2.raw as pdfium_c

        w, h = page.get_size()
        area = max(1.0, float(w) * float(h))
        scale = min(int(self.s["pdf_dpi"]) / 72.0, math.sqrt(int(self.s["scan_pixels"]) / area))
        # No anti-aliasing: crisper module edges, and a fifth less time per page. Drawn
        # straight into a grey bitmap (one byte a pixel, what the reader takes): a third
        # less time than PDFium's grayscale mode, which converts every colour it draws.
        bitmap = page.render(
            scale=scale,
            may_draw_forms=False,
            no_smoothtext=True,
            no_smoothimage=True,
            no_smoothpath=True,
            force_bitmap_format=pdfium_c.FPDFBitmap_Gray,
        )
        try:
            return self.codes(bitmap.to_pil())
        finally:
            bitmap.close()

    def one(self, kind: str, data: bytes) -> Frame:
        if self.out_of_time():
            return {"hits": ["qr.max_seconds"]}
        return self.pdf(data) if kind == "pdf" else self.image(data)


# --------------------------------------------------------------------------- framing


def read_frame(stream: IO[bytes]) -> Frame | None:
    head = _read_exact(stream, 4)
    if head is None:
        return None
    body = _read_exact(stream, struct.unpack(">I", head)[0])
    if body is None:
        return None
    value = json.loads(body)
    return value if isinstance(value, dict) else None


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def frame(value: Frame) -> bytes:
    body = json.dumps(value, ensure_ascii=True).encode("ascii")
    return struct.pack(">I", len(body)) + body


def serve(inp: IO[bytes], out: IO[bytes], clock: Callable[[], float] = time.process_time) -> None:
    """Answer requests until the scanner closes the pipe: one frame per payload, then done."""
    while True:
        request = read_frame(inp)
        if request is None:
            return
        items = request.get("items", [])
        blobs = []
        for item in items:
            data = _read_exact(inp, int(item["size"]))
            if data is None:
                return
            blobs.append(data)
        start = clock()
        decoder = Decoder(request["settings"], time.monotonic() + float(request["seconds"]))
        for index, (item, data) in enumerate(zip(items, blobs, strict=True)):
            result = decoder.one(str(item["kind"]), data)
            out.write(frame({"item": index, **result}))
            out.flush()
        out.write(frame({"done": True, "cpu": clock() - start, "rss_mb": _peak_rss_mb()}))
        out.flush()


def _peak_rss_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return 0.0


def main() -> None:
    _limit_self(int(os.environ.get("BRANDGATE_QR_MEMORY_MB", "1024")))
    # Import the decoders before saying ready, so that a message's time is spent decoding.
    import pypdfium2  # noqa: F401
    import zxingcpp  # noqa: F401
    from PIL import Image  # noqa: F401

    out = sys.stdout.buffer
    out.write(frame({"ready": True, "pid": os.getpid()}))
    out.flush()
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
