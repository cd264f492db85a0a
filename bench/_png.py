"""A small RGB canvas that writes PNG files, with a 5x7 bitmap font: enough for the report's
bar chart without a plotting library (standard library only: ``zlib`` and ``struct``).

``Canvas(width, height)``; ``rect``, ``line_h``, ``line_v``, ``text`` draw (clipped to the
canvas); ``save(path)`` writes an 8-bit RGB PNG (one IDAT chunk, filter 0 on every row).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

__all__ = ["Canvas", "Color", "GLYPH_W", "GLYPH_H", "text_width"]

Color = tuple[int, int, int]

GLYPH_W = 5
GLYPH_H = 8

# Rows top to bottom, 5 bits each (the leftmost pixel is 0x10): the classic character-LCD
# font, seven rows per character from 32 to 126 (anything else is drawn as "?"), and an
# eighth row for the descenders of the letters in _DESCENDERS.
_FONT_HEX = (
    "00000000000000 04040404000004 0a0a0a00000000 0a0a1f0a1f0a0a 040f140e051e04 18190204081303 "
    "0c12140815120d 0c040800000000 02040808080402 08040202020408 0004150e150400 0004041f040400 "
    "000000000c0408 0000001f000000 00000000000c0c 00010204081000 0e11131519110e 040c040404040e "
    "0e11010204081f 1f02040201110e 02060a121f0202 1f101e0101110e 0608101e11110e 1f010204080808 "
    "0e11110e11110e 0e11110f01020c 000c0c000c0c00 000c0c000c0408 02040810080402 00001f001f0000 "
    "08040201020408 0e110102040004 0e11010d15150e 0e1111111f1111 1e11111e11111e 0e11101010110e "
    "1c12111111121c 1f10101e10101f 1f10101e101010 0e11101711110f 1111111f111111 0e04040404040e "
    "0702020202120c 11121418141211 1010101010101f 111b1515111111 11111915131111 0e11111111110e "
    "1e11111e101010 0e11111115120d 1e11111e141211 0f10100e01011e 1f040404040404 1111111111110e "
    "11111111110a04 1111111515150a 11110a040a1111 1111110a040404 1f01020408101f 0e08080808080e "
    "00100804020100 0e02020202020e 040a1100000000 0000000000001f 08040200000000 00000e010f110f "
    "1010161911111e 00000e1010110e 01010d1311110f 00000e111f100e 0609081c080808 000f11110f010e "
    "10101619111111 04000c0404040e 0200060202120c 10101214181412 0c04040404040e 00001a15151111 "
    "00001619111111 00000e1111110e 00001e111e1010 00000d130f0101 00001619101010 00000e100e011e "
    "08081c08080906 0000111111130d 00001111110a04 0000111115150a 0000110a040a11 000011110f010e "
    "00001f0204081f 02040408040402 04040404040404 08040402040408 00000815020000"
)
_DESCENDERS = {
    "g": "00000f11110f010e", "j": "020006020202120c", "p": "00001e11111e1010",
    "q": "00000f11110f0101", "y": "00001111110f010e",
    ",": "000000000c0c0408", ";": "000c0c000c0c0408",
}  # fmt: skip


def _rows(hex_rows: str) -> tuple[int, ...]:
    return tuple(int(hex_rows[j:j + 2], 16) for j in range(0, len(hex_rows), 2))


_FONT: dict[str, tuple[int, ...]] = {
    chr(32 + i): (*_rows(glyph), 0) for i, glyph in enumerate(_FONT_HEX.split())
}
_FONT.update((ch, _rows(rows)) for ch, rows in _DESCENDERS.items())
assert len(_FONT) == 95 and all(len(g) == GLYPH_H for g in _FONT.values())


def text_width(text: str, scale: int = 1) -> int:
    """Pixels ``text`` takes at ``scale`` (one pixel column between characters)."""
    return len(text) * (GLYPH_W + 1) * scale


class Canvas:
    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + w), min(self.height, y + h)
        if x1 <= x0 or y1 <= y0:
            return
        row = bytes(color) * (x1 - x0)
        for yy in range(y0, y1):
            start = (yy * self.width + x0) * 3
            self.pixels[start:start + len(row)] = row

    def line_h(self, x: int, y: int, w: int, color: Color, thickness: int = 1) -> None:
        self.rect(x, y, w, thickness, color)

    def line_v(self, x: int, y: int, h: int, color: Color, thickness: int = 1) -> None:
        self.rect(x, y, thickness, h, color)

    def text(self, x: int, y: int, text: str, color: Color = (0, 0, 0), scale: int = 1) -> int:
        """Draw ``text`` with its top-left corner at (x, y); return the x after it."""
        for ch in text:
            rows = _FONT.get(ch) or _FONT["?"]
            for r, bits in enumerate(rows):
                for c in range(GLYPH_W):
                    if bits & (0x10 >> c):
                        self.rect(x + c * scale, y + r * scale, scale, scale, color)
            x += (GLYPH_W + 1) * scale
        return x

    def png(self) -> bytes:
        """The canvas as PNG file bytes."""
        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride:(y + 1) * stride])
                       for y in range(self.height))  # fmt: skip

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))  # fmt: skip

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.png())
