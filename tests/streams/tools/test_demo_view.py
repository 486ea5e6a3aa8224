"""The demo's terminal view: readable at 80 columns, every figure explained, the article named."""

from __future__ import annotations

from rich.console import Console

from streams.tools.demo import ARTICLE, LEADERBOARD_LEGEND, _leaderboard_table


def test_the_leaderboard_fits_80_columns_and_explains_its_columns() -> None:
    rows = [
        {
            "model": f"model_{i:03d}",
            "corr_mean": 0.0403,
            "contribution_mean": -0.0123,
            "mmc_mean": 0.0202,
            "corr_w_mm_mean": 0.342,
            "payout_mean": 0.05,
            "stake": 123456.7,
            "rounds": 20,
        }
        for i in range(10)
    ]
    console = Console(width=80, record=True)
    console.print(_leaderboard_table(rows))
    text = console.export_text()
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "model_009" in text and "-0.012" in text and "+0.342" in text and "123,457" in text
    for column in ("CORR:", "MMC:", "MMC'20:", "CWMM:", "payout:", "n:"):
        assert column in LEADERBOARD_LEGEND
    assert "Tax on Success" in ARTICLE
