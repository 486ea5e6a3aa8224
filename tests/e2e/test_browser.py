"""The live leaderboard in headless Chromium: it loads with data, then a newly streamed update appears without reload.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
and the ``selenium`` package; skipped with the reason when either is missing. Nothing is
downloaded at test time. Set ``MMC_SCREENSHOTS=docs`` to write the screenshots the README uses
(``docs/leaderboard.png``, ``docs/model.png``); otherwise they go to the test's tmp dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import StackEnv, run_sync
from tests.e2e.harness import produce
from tests.e2e.tournament import SPIKE_MODEL, build
from tests.streams.web.test_web import LiveService, http, live_service, service_settings

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_HINT = "apt-get install -y chromium chromium-driver"
# The flags a sandboxed, offline machine needs (no GPU, no sandbox, no network beyond loopback).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
WAIT = 15.0


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium through Selenium, with a fresh profile."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"headless Chromium not installed ({', '.join(missing)} missing): {APT_HINT}")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs the selenium package")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1440,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def service(stack_env: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = service_settings(stack_env)
    with live_service(settings, build(), tmp_path_factory.mktemp("browser")) as running:
        yield running


def screenshot_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("MMC_SCREENSHOTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


def wait_for(driver: Any, condition: Any, what: str, timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message=f"waited {timeout} s for {what}")


def board_rows(driver: Any) -> dict[str, dict[str, str]]:
    """Model → {column key: data-value or text} of the leaderboard table as displayed."""
    return driver.execute_script(
        """
        const out = {};
        for (const tr of document.querySelectorAll('#board tbody tr')) {
          const row = {};
          for (const td of tr.cells) row[td.dataset.key] = td.dataset.value !== undefined && td.dataset.value !== '' ? td.dataset.value : td.textContent;
          out[tr.dataset.model] = row;
        }
        return out;
        """
    )


def test_leaderboard_loads_then_a_streamed_update_appears_without_reload(browser: Any, service: LiveService, tmp_path: Path) -> None:
    """The page shows every model's standing; a new target update shows up live, with no reload."""
    t = service.tournament
    (event,) = service.withheld
    update = orjson.loads(event.value)
    browser.get(service.web_url + "/")
    wait_for(browser, lambda d: len(board_rows(d)) == len(t.models), "the leaderboard rows")
    wait_for(browser, lambda d: d.execute_script("return window.mmcLive.connected"), "the live stream")
    before = http("GET", service.web_url + "/api/leaderboard", {"limit": 1000}).json()["rows"]
    shown = board_rows(browser)
    for row in before:
        assert float(shown[row["model"]]["payout_mean"]) == pytest.approx(row["payout_mean"], rel=1e-12)
        assert shown[row["model"]]["rank"] == str(row["rank"])
    assert browser.find_elements("css selector", "#trend-chart .series.s0 circle"), "trend chart drawn"
    assert browser.find_elements("css selector", "#alerts li.alert"), "alerts listed"
    # the crowding panel: MMC by CWMM decile in the latest round, today's MMC and 2020 beside it
    latest = max(f["round"] for f in http("GET", service.web_url + "/api/trend").json()["trend"])
    assert browser.find_element("id", "deciles-meta").text.startswith(f"round {latest}")
    for series in ("s0", "s1"):
        assert browser.find_elements("css selector", f"#deciles-chart .series.{series} circle"), f"decile series {series} drawn"
    browser.execute_script("window.__sameDocument = 42")

    run_sync(produce(service.settings, service.withheld))
    label = f"r{update['round']} · day {update['day']} · final"
    wait_for(
        browser,
        lambda d: all(row["as_of"] == label for row in board_rows(d).values()),
        f"every row to show the streamed update ({label})",
    )
    assert browser.execute_script("return window.__sameDocument") == 42, "the page reloaded"
    after = http("GET", service.web_url + "/api/leaderboard", {"limit": 1000}).json()["rows"]
    shown = board_rows(browser)
    for row in after:
        assert float(shown[row["model"]]["payout_mean"]) == pytest.approx(row["payout_mean"], rel=1e-12)
    assert after != before
    assert browser.execute_script("return window.mmcLive.byTopic.leaderboard") >= len(t.models)
    wait_for(
        browser,
        lambda d: not d.find_elements("css selector", "tr.flash"),
        "the update highlight to fade",
    )
    browser.set_window_size(1440, 1560)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "leaderboard.png"))


def test_round_view_and_sorting(browser: Any, service: LiveService) -> None:
    """?round=r shows the round's scores; clicking CORR sorts by it, twice reverses."""
    r = service.tournament.rounds[0]
    browser.get(f"{service.web_url}/?round={r}")
    wait_for(browser, lambda d: len(board_rows(d)) == len(service.tournament.models), "the round's rows")
    assert browser.find_element("id", "board-title").text == f"Round {r}"
    header = browser.find_element("css selector", '#board th[data-key="corr"]')
    header.click()
    corr = [float(v["corr"]) for v in _ordered_rows(browser)]
    assert corr == sorted(corr, reverse=True)
    browser.find_element("css selector", '#board th[data-key="corr"]').click()
    corr = [float(v["corr"]) for v in _ordered_rows(browser)]
    assert corr == sorted(corr)


def _ordered_rows(driver: Any) -> list[dict[str, str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#board tbody tr')].map(tr => Object.fromEntries([...tr.cells].map(td => [td.dataset.key, td.dataset.value])))"
    )


def test_model_page_charts_its_history(browser: Any, service: LiveService, tmp_path: Path) -> None:
    """/models/{m} charts CWMM and scores for every round and lists its history and alerts."""
    browser.get(f"{service.web_url}/models/{SPIKE_MODEL}")
    n_rounds = len(service.tournament.rounds)
    wait_for(
        browser,
        lambda d: len(d.find_elements("css selector", "#history tbody tr")) == n_rounds,
        "the history rows",
    )
    assert len(browser.find_elements("css selector", "#cwmm-chart .series.s0 circle")) == n_rounds
    assert len(browser.find_elements("css selector", "#score-chart .series.s0 circle")) == n_rounds
    assert browser.find_element("id", "model-title").text == SPIKE_MODEL
    assert browser.find_elements("css selector", "#model-alerts li.alert"), "the model's alerts"
    browser.set_window_size(1440, 1300)
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "model.png"))


def _wait_board(driver: Any, service: LiveService) -> None:
    driver.get(service.web_url + "/")
    wait_for(driver, lambda d: len(board_rows(d)) == len(service.tournament.models), "the leaderboard rows")


def test_search_suggests_model_names_and_opens_the_chosen_model(browser: Any, service: LiveService) -> None:
    """Typing in the header's search box lists matching model names; choosing one opens its page."""
    _wait_board(browser, service)
    box = browser.find_element("id", "search-input")
    box.send_keys("m0")
    suggested = lambda d: [a.get_attribute("data-model") for a in d.find_elements("css selector", "#search-suggestions a")]  # noqa: E731
    wait_for(browser, lambda d: len(suggested(d)) > 0, "suggestions")
    names = suggested(browser)
    assert all("m0" in n for n in names) and names == sorted(names) and len(names) <= 8
    box.send_keys(SPIKE_MODEL[2:])
    wait_for(browser, lambda d: suggested(d)[:1] == [SPIKE_MODEL], f"{SPIKE_MODEL} suggested first")
    browser.find_element("css selector", f'#search-suggestions a[data-model="{SPIKE_MODEL}"]').click()
    wait_for(browser, lambda d: d.find_element("id", "model-title").text == SPIKE_MODEL, "the chosen model's page")
    assert browser.current_url.endswith(f"/models/{SPIKE_MODEL}")


def test_sorting_by_a_column_reorders_rows_and_zero_stakes_hide(browser: Any, service: LiveService) -> None:
    """A click on Sharpe sorts descending (nulls last, ties by model id), a second ascending; the toggle hides zero stakes."""
    _wait_board(browser, service)

    def column(key: str) -> list[tuple[float | None, str]]:
        return [(float(r[key]) if r[key] else None, r["model"]) for r in _ordered_rows(browser)]

    def expected(values: list[tuple[float | None, str]], desc: bool) -> list[tuple[float | None, str]]:
        present = sorted((v for v in values if v[0] is not None), key=lambda v: ((-v[0] if desc else v[0]), v[1]))  # type: ignore[operator]
        return present + sorted((v for v in values if v[0] is None), key=lambda v: v[1])

    for key in ("payout_sharpe", "stake_payout"):
        browser.find_element("css selector", f'#board th[data-key="{key}"]').click()
        shown = column(key)
        assert shown == expected(shown, desc=True), key
        browser.find_element("css selector", f'#board th[data-key="{key}"]').click()
        shown = column(key)
        assert shown == expected(shown, desc=False), key
    api_rows = http("GET", service.web_url + "/api/leaderboard", {"limit": 1000}).json()["rows"]
    staked = {r["model"] for r in api_rows if r["stake"] > 0}
    browser.find_element("id", "hide-zero-stake").click()
    wait_for(browser, lambda d: set(board_rows(d)) == staked, "only the staked models")
    browser.find_element("id", "hide-zero-stake").click()
    wait_for(browser, lambda d: len(board_rows(d)) == len(api_rows), "every model again")


def test_model_page_shows_stake_and_any_rounds_crowding_with_explanations(browser: Any, service: LiveService) -> None:
    """The model page charts its stake at close beside CWMM and draws the crowding panels of the round picked."""
    browser.get(f"{service.web_url}/models/{SPIKE_MODEL}")
    n_rounds = len(service.tournament.rounds)
    wait_for(browser, lambda d: len(d.find_elements("css selector", "#stake-chart .series circle")) == n_rounds, "the stake chart")
    first = service.tournament.rounds[0]
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "crowd-round")).select_by_value(str(first))
    wait_for(browser, lambda d: d.find_element("id", "crowd-meta").text.startswith(f"round {first}"), f"round {first}'s crowding")
    crowding = http("GET", f"{service.web_url}/api/rounds/{first}/crowding").json()
    assert f"{crowding['effective_models']:.1f}" in browser.find_element("id", "crowd-stats").text
    assert browser.find_elements("css selector", "#crowd-stake-chart .series.s0 circle")
    assert browser.find_elements("css selector", "#crowd-mmc-chart .series.s0 circle")
    page = browser.find_element("id", "model-view").text
    for term in ("HHI", "Effective number of models", "Sharpe", "drawdown", "CWMM"):
        assert term in page, term


def test_pages_fit_a_400px_wide_viewport(browser: Any, service: LiveService, tmp_path: Path) -> None:
    """At 400 px the leaderboard and the model page never scroll sideways: wide tables scroll in their own box."""
    browser.set_window_size(400, 900)
    try:
        width = browser.execute_script("return window.innerWidth")
        assert width <= 400
        _wait_board(browser, service)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        browser.save_screenshot(str(screenshot_dir(tmp_path) / "leaderboard-400.png"))
        browser.get(f"{service.web_url}/models/{SPIKE_MODEL}")
        wait_for(browser, lambda d: d.find_elements("css selector", "#history tbody tr"), "the model page")
        wait_for(browser, lambda d: d.find_elements("css selector", "#crowd-mmc-chart .series circle"), "the crowding panels")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        browser.save_screenshot(str(screenshot_dir(tmp_path) / "model-400.png"))
    finally:
        browser.set_window_size(1440, 1000)


def test_unknown_model_shows_a_not_found_state(browser: Any, service: LiveService) -> None:
    """/models/<unknown> says the model was not found, shows no empty cards, and the live badge does not stay on connecting…."""
    browser.get(f"{service.web_url}/models/no_such_model")
    wait_for(browser, lambda d: d.find_element("id", "model-not-found").is_displayed(), "the not-found state")
    assert "no_such_model" in browser.find_element("id", "model-not-found").text
    visible = [e for e in browser.find_elements("css selector", "#model-view [data-found]") if e.is_displayed()]
    assert visible == []
    assert browser.find_element("id", "live").text not in ("connecting…", "")


def test_model_page_shows_who_crowds_it(browser: Any, service: LiveService) -> None:
    """/models/{m} shows who crowds it: its nearest stakers, its crowd's stake share by round and its crowding tax, each figure explained."""
    body = service.get(f"/api/models/{SPIKE_MODEL}/neighbours").json()
    browser.get(f"{service.web_url}/models/{SPIKE_MODEL}")
    wait_for(browser, lambda d: d.find_elements("css selector", "#neighbours-table tbody tr"), "the neighbours table")
    names = [tr.find_element("css selector", "td").text for tr in browser.find_elements("css selector", "#neighbours-table tbody tr")]
    assert names == [n["model"] for n in body["neighbours"]["neighbours"]]
    shares = [p for p in body["crowd"] if p["crowd_share"] is not None]
    assert len(browser.find_elements("css selector", "#crowd-share-chart .series.s2 circle")) == len(shares)
    assert len(browser.find_elements("css selector", "#crowd-tax-table tbody tr")) == len(body["tax"])
    text = browser.find_element("id", "who-crowds-you").text
    for phrase in ("Who crowds you", "Correlation:", "Crowd's stake share by round", "MMC earned:", "MMC without its crowd:", "Difference:"):
        assert phrase in text, phrase
