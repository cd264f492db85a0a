"""bench/report.py and its pieces: the PNG writer, the latency chart, running a benchmark."""

from __future__ import annotations

import struct
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
from _png import GLYPH_H, Canvas, text_width  # noqa: E402
from _report_plot import GREEN, RED, latency_chart  # noqa: E402


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB bytes, checking the signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", header)
    assert (depth, color) == (8, 2)
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    rows = [raw[y * stride:(y + 1) * stride] for y in range(height)]
    assert all(r[0] == 0 for r in rows)  # filter "none"
    return width, height, [r[1:] for r in rows]


def pixel(rows: list[bytes], x: int, y: int) -> tuple[int, int, int]:
    r, g, b = rows[y][3 * x:3 * x + 3]
    return (r, g, b)


def test_a_canvas_is_a_valid_png_with_what_was_drawn() -> None:
    c = Canvas(40, 30)
    c.rect(5, 5, 10, 4, (255, 0, 0))
    c.rect(35, 25, 100, 100, (0, 0, 255))  # clipped at the edges
    end = c.text(2, 15, "Hi", (0, 128, 0))
    assert end == 2 + text_width("Hi")
    width, height, rows = decode_png(c.png())
    assert (width, height) == (40, 30)
    assert pixel(rows, 5, 5) == pixel(rows, 14, 8) == (255, 0, 0)
    assert pixel(rows, 15, 5) == pixel(rows, 4, 5) == (255, 255, 255)
    assert pixel(rows, 39, 29) == (0, 0, 255)
    inked = {(x, y) for y in range(15, 15 + GLYPH_H) for x in range(2, end)
             if pixel(rows, x, y) == (0, 128, 0)}  # fmt: skip
    assert inked and all(2 <= x < end for x, _ in inked)
    assert (2, 15) in inked  # "H" has its top-left pixel set


def figure(name: str, value: float, target: float | None, **more: Any) -> dict[str, Any]:
    return {"bench": "x", "name": name, "value": value, "unit": "ms", "target": target,
            "better": "lower", "latency": True, **more}  # fmt: skip


def test_the_chart_shows_met_and_missed_targets() -> None:
    figures = [figure("fast", 0.5, 1.0), figure("slow", 3.0, 1.0), figure("no target", 1.0, None)]
    c = latency_chart(figures, {("x", "fast"): 0.8})
    _, height, rows = decode_png(c.png())
    colors = {pixel(rows, x, y) for y in range(height) for x in range(c.width)}
    assert GREEN in colors and RED in colors
    # Two bars and the legend: the figure without a target is not drawn.
    assert height < 24 + 6 * 30 + 2 * 30


def test_met_and_change() -> None:
    assert report.met(figure("a", 1.0, 2.0)) is True
    assert report.met(figure("a", 3.0, 2.0)) is False
    assert report.met(figure("a", 3.0, 2.0, better="higher")) is True
    assert report.met(figure("a", 3.0, None)) is None
    assert report.change(figure("a", 1.1, None), 1.0) == "+10.0% (worse)"
    assert report.change(figure("a", 1.1, None, better="higher"), 1.0) == "+10.0% (better)"
    assert report.change(figure("a", 1.0, None), None) == "new"
    assert report.change(figure("a", 1.0, None), 1.0) == "="


def test_the_benchmarks_are_the_scripts_that_are_not_tools() -> None:
    names = report.benchmarks(None)
    assert names[:2] == ["ipc", "classify"]
    assert "report" not in names and not any(n.startswith("_") for n in names)
    assert report.benchmarks(["classify"]) == ["classify"]
    with pytest.raises(SystemExit):
        report.benchmarks(["nonesuch"])


def test_a_benchmark_run_collects_its_output_and_figures(tmp_path: Path) -> None:
    script = tmp_path / "fake.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(BENCH)!r})
        from _figures import record
        print("figures follow", sys.argv[1:])
        record("wait", 12.5, "ms", target=20.0, latency=True)
        record("rate", 900.0, "/s", better="higher")
    """))
    run = report.run_one("fake", script, ["--quick"], timeout=60)
    assert run.status == "ok" and "figures follow ['--quick']" in run.stdout
    assert [(f["bench"], f["name"], f["value"]) for f in run.figures] == [
        ("fake", "wait", 12.5), ("fake", "rate", 900.0)]  # fmt: skip
    table = "\n".join(report.figures_table([run], {("fake", "wait"): 10.0}))
    assert "| fake | wait | 12.5 ms | ≤ 20.0 ms | yes | 10.0 ms | +25.0% (worse) |" in table


def test_a_benchmark_out_of_time_is_stopped_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(60)
    """))
    run = report.run_one("slow", script, [], timeout=2.0)
    assert run.returncode is None and run.status == "stopped at the time limit"
    assert "started" in run.stdout
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5.0
    while not _gone(child):
        assert time.monotonic() < deadline, "the benchmark's child outlived the time limit"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """No such process, or only its exit status is left (a zombie, reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
