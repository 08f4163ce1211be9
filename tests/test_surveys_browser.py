"""A real headless Chromium answers a survey from an e-mail received over SMTP.

`csops surveys serve` runs as a subprocess (the real CLI and waitress) on a free loopback port;
the link comes from the mail the SMTP sink received; the answer is read back from the database.
Skipped cleanly when chromium or chromedriver is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from tests.surveys_helpers import (
    SIGNING_KEY,
    SURVEY_CONFIG,
    checksum,
    free_port,
    links_in,
    seed_orders,
    smtp_sink,
    use_smtp,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium/chromedriver missing"),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="csops-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=390,844",  # a phone screen
        "--lang=en-US",
    ):
        opts.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except Exception as exc:  # pragma: no cover - environment without a usable browser
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"cannot start chromium: {exc}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served_shop(workspace):
    """A workspace whose survey mail went out over SMTP, and `csops surveys serve` running."""
    port = free_port()
    workspace.set_config(SURVEY_CONFIG)
    workspace.replace_config(
        'base_url = "http://127.0.0.1:8080"', f'base_url = "http://127.0.0.1:{port}"'
    )
    workspace.env.update({"CSOPS_SIGNING_KEYS": SIGNING_KEY, "CSOPS_NOW": "2024-04-20T02:00:00Z"})
    with smtp_sink() as sink:
        use_smtp(workspace, sink.port, alerts=False)
        seed_orders(workspace.db_path, 4)
        p = workspace.run("surveys", "send")
        assert p.code == 0, p.stderr
        assert len(sink.messages) == 4
        proc = workspace.popen("surveys", "serve", "--port", str(port))
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if requests.get(f"{base}/healthz", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
            yield workspace, sink, base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()


def test_a_person_opens_the_mailed_link_sees_the_score_comments_and_submits(served_shop, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shop, sink, base = served_shop
    msg = next(m for m in sink.messages if m["To"] == "customer2@example.com")
    link = next(u for u in links_in(msg) if "/s/" in u and u.endswith("score=4"))
    assert link.startswith(f"{base}/s/")

    browser.get(link)
    radio = browser.find_element(By.CSS_SELECTOR, 'input[name="score"][value="4"]')
    assert radio.is_selected()
    others = browser.find_elements(By.CSS_SELECTOR, 'input[name="score"]:checked')
    assert len(others) == 1
    # Fits a phone screen: no horizontal scrolling.
    width = browser.execute_script("return document.documentElement.scrollWidth")
    viewport = browser.execute_script("return window.innerWidth")
    assert width <= viewport
    assert shop.query("SELECT responded_at FROM surveys WHERE id = 2")[0]["responded_at"] is None

    browser.find_element(By.ID, "comment").send_keys("Fast delivery, 谢谢!")
    browser.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "recorded")))
    assert "Thank you" in browser.page_source

    rows = shop.query(
        "SELECT s.score, s.comment, s.response_source, o.recipient FROM surveys s "
        "JOIN outbox o ON o.id = s.outbox_id WHERE s.responded_at IS NOT NULL"
    )
    assert rows == [
        {
            "score": 4,
            "comment": "Fast delivery, 谢谢!",
            "response_source": "web",
            "recipient": "customer2@example.com",
        }
    ]

    # Changing the mind: open another score link of the same mail and submit; still one answer.
    browser.get(next(u for u in links_in(msg) if u.endswith("score=5")))
    assert browser.find_element(By.ID, "comment").get_attribute("value") == "Fast delivery, 谢谢!"
    browser.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "recorded")))
    rows = shop.query("SELECT id, score FROM surveys WHERE responded_at IS NOT NULL")
    assert rows == [{"id": 2, "score": 5}]


def test_a_browser_that_only_loads_links_records_nothing(served_shop, browser):
    shop, sink, _base = served_shop
    before = checksum(shop.db_path)
    for msg in sink.messages:
        for url in links_in(msg):  # every score link and the unsubscribe link, no clicks
            browser.get(url)
            assert browser.find_elements("css selector", "form")
    time.sleep(0.5)  # let any page script run (there is none: CSP allows no script)
    assert checksum(shop.db_path) == before


def test_the_unsubscribe_page_button_posts_and_suppresses_marketing_mail(served_shop, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shop, sink, _base = served_shop
    msg = next(m for m in sink.messages if m["To"] == "customer3@example.com")
    browser.get(msg["List-Unsubscribe"][1:-1])
    assert shop.query("SELECT COUNT(*) AS n FROM suppressions")[0]["n"] == 0
    browser.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    WebDriverWait(browser, 15).until(ec.title_contains("unsubscribed"))
    assert shop.query("SELECT address, scope FROM suppressions") == [
        {"address": "customer3@example.com", "scope": "marketing"}
    ]
