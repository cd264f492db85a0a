"""routerctl stats and top, as pure text: number formats, tables, frames cut to a window."""

from __future__ import annotations

import io

import pytest

from routerd_client.cli_stats import fallback_text, format_stats, seconds_text
from routerd_client.cli_top import fit, frame_lines, redraws_in_place
from routerd_client.protocol_stats import (
    DaemonStats,
    ModelStats,
    RecentRequest,
    RouteTotals,
    StatsResult,
    Summary,
)


@pytest.mark.parametrize(("value", "text"), [
    (None, "-"), (0.0, "0 us"), (0.00085, "850 us"), (0.0042, "4.2 ms"), (0.25, "250 ms"),
    (1.234, "1.23 s"), (59.99, "59.99 s"), (123.0, "2m 03s"),
])  # fmt: skip
def test_seconds_text(value: float | None, text: str) -> None:
    assert seconds_text(value) == text


def stats(n_recent: int = 0, models: int = 1) -> StatsResult:
    m = [
        ModelStats(service="ollama", model=f"model-{i}", requests=10, ok=8, errors=2,
                   fallback_levels={"0": 5, "1": 2, "3": 1}, error_classes={"busy": 2},
                   first_token=Summary(count=8, p50=0.2), duration=Summary(count=8, p50=1.5))
        for i in range(models)
    ]  # fmt: skip
    recent = [RecentRequest(at=1_700_000_000.0 + i, outcome="ok", service="ollama",
                            model="m", fallback_level=0) for i in range(n_recent)]  # fmt: skip
    return StatsResult(
        at=1_700_000_100.0, accuracy=0.01,
        daemon=DaemonStats(version="1.2.3", pid=42, uptime_s=3725.0),
        routes=RouteTotals(total=10, results={"ok": 8, "failed": 2}), models=m, recent=recent,
    )  # fmt: skip


def test_fallbacks_are_shown_by_level_without_the_first_choice() -> None:
    assert fallback_text(stats().models[0]) == "L1:2 L3:1"
    assert fallback_text(ModelStats(service="s", model="m", fallback_levels={"0": 3})) == "-"


def test_the_stats_table() -> None:
    text = format_stats(stats())
    assert text.splitlines()[0] == "routes 10 (ok 8, failed 2); percentiles within 1%"
    assert "ollama/model-0: busy 2" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("ollama"))
    assert row[:9] == ["ollama", "model-0", "10", "8", "2", "0", "L1:2", "L3:1", "0"]


def test_a_frame_names_every_section() -> None:
    lines = frame_lines(stats(n_recent=2), None)
    headings = [text for text, heading in lines if heading]
    assert headings == ["SERVERS", "QUEUES", "MODELS", "LATEST REQUESTS"]
    assert lines[0][0].startswith("routerd 1.2.3  pid 42  up 1h 02m")


def test_a_frame_fits_the_window_dropping_the_oldest_requests_first() -> None:
    lines = frame_lines(stats(n_recent=30), None)
    cut = fit(lines, 40, 20)
    assert len(cut) == 20 and all(len(text) <= 40 for text, _ in cut)
    assert ("LATEST REQUESTS", True) in cut
    shown = [text for text, _ in cut if text[:2].isdigit()]
    every = [text for text, _ in lines if text[:2].isdigit()]
    assert 0 < len(shown) < len(every)
    assert shown == [text[:40] for text in every[-len(shown):]]  # the newest are kept
    assert fit(lines, 200, 500) == lines  # room for everything: nothing is cut


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_top_redraws_in_place_only_on_a_posix_terminal() -> None:
    assert redraws_in_place(_Terminal(), json=False, platform="linux")
    assert not redraws_in_place(_Terminal(), json=True, platform="linux")
    assert not redraws_in_place(io.StringIO(), json=False, platform="darwin")
    assert not redraws_in_place(_Terminal(), json=False, platform="win32")  # plain frames
