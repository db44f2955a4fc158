"""Counts taken while the application writes are judged against the writes in flight."""

from __future__ import annotations

from checks.live import CountBand


def test_band_is_exact_without_writes() -> None:
    band = CountBand(source_before=100, source_after=100, writes_in_window=0)
    assert band.holds(100) and not band.holds(99) and not band.holds(101)
    assert band.describe() == "source 100 rows (no writes in flight)"


def test_band_widens_by_the_writes_in_flight() -> None:
    band = CountBand(source_before=100, source_after=104, writes_in_window=3)
    assert (band.low, band.high) == (97, 107)
    assert band.holds(97) and band.holds(107) and not band.holds(96) and not band.holds(108)
    assert "3 application writes in flight" in band.describe()
