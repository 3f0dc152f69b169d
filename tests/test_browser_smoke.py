"""The browser fixtures work: real Chromium, the real app served on loopback, clicks, JavaScript, screenshots."""

from __future__ import annotations

import json
import socket
import struct
import zlib
from urllib.parse import urlsplit

from flask import Flask, request
from markupsafe import escape
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.browser import SCREENSHOTS, browser, live_app, screenshot, serve, wait  # noqa: F401 (fixtures)
from tests.test_web_support import app, services  # noqa: F401 (fixtures)

HOTLINE = "市民热线"

PAGE = """<!doctype html>
<html lang="zh-CN">
<head><meta charset="utf-8"><title>12345 {hotline}</title>
<style>body {{ font: 24px sans-serif; margin: 40px; }} #status {{ color: #06c; }}</style></head>
<body>
  <h1>12345 {hotline}</h1>
  <p id="status">等待点击</p>
  <form method="post" action="/submit">
    <label>来电人 <input id="caller" name="caller"></label>
    <button id="check" type="button">检查</button>
    <button id="send" type="submit" disabled>提交</button>
  </form>
  <script>
    document.getElementById("check").addEventListener("click", function () {{
      var caller = document.getElementById("caller").value;
      document.getElementById("status").textContent = "已检查：" + caller;
      document.getElementById("send").disabled = false;
    }});
  </script>
</body>
</html>
"""


def throwaway_app() -> Flask:
    """A page with a form whose submit button JavaScript enables on click, and the page the form posts to."""
    page = Flask(__name__)

    @page.get("/")
    def form():
        return PAGE.format(hotline=HOTLINE)

    @page.post("/submit")
    def submit():
        return f'<!doctype html><meta charset="utf-8"><p id="thanks">已收到：{escape(request.form["caller"])}</p>'

    return page


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]  # the IHDR chunk is intact
    return struct.unpack(">II", data[16:24])


def _viewport(browser) -> tuple[int, int]:  # noqa: F811
    # --window-size=1280,900 sizes the window; the page (and so the screenshot) gets 1280 x ~760 of it.
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    assert width == 1280 and 600 < height <= 900
    return width, height


def test_health_page_of_the_real_app(browser, live_app, app):  # noqa: F811
    base = live_app(app)
    browser.get(base + "/health")
    # Chromium shows a JSON answer as text in a <pre>.
    pre = wait(browser).until(EC.visibility_of_element_located((By.TAG_NAME, "pre")))
    assert json.loads(pre.text) == {"status": "ok", "checks": {"database": {"status": "ok"},
                                                                "redis": {"status": "ok"}}}
    path = screenshot(browser, f"smoke-health-{urlsplit(app.extensions['hotline'].settings.database_url).scheme}")
    assert path.parent == SCREENSHOTS
    assert _png_size(path) == _viewport(browser)


def test_click_runs_javascript_and_form_submits(browser, live_app):  # noqa: F811
    base = live_app(throwaway_app())
    browser.get(base + "/")
    assert wait(browser).until(EC.title_is(f"12345 {HOTLINE}"))
    status = browser.find_element(By.ID, "status")
    send = browser.find_element(By.ID, "send")
    assert status.text == "等待点击" and not send.is_enabled()

    browser.find_element(By.ID, "caller").send_keys("张三")
    browser.find_element(By.ID, "check").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "status"), "已检查：张三"))
    wait(browser).until(EC.element_to_be_clickable(send))
    assert browser.find_element(By.TAG_NAME, "h1").text == f"12345 {HOTLINE}"
    assert _png_size(screenshot(browser, "smoke-throwaway-form")) == _viewport(browser)

    send.click()
    thanks = wait(browser).until(EC.visibility_of_element_located((By.ID, "thanks")))
    assert thanks.text == "已收到：张三"
    assert browser.current_url == base + "/submit"


def test_each_test_starts_blank_without_cookies(browser, live_app):  # noqa: F811
    assert browser.current_url == "about:blank"
    base = live_app(throwaway_app())
    browser.get(base + "/")
    browser.add_cookie({"name": "seen", "value": "1"})
    browser.execute_script("localStorage.setItem('seen', '1')")
    assert browser.get_cookie("seen")["value"] == "1"


def test_the_previous_test_left_nothing(browser, live_app):  # noqa: F811
    # Runs after the one above on the same Chromium (one per module).
    assert browser.current_url == "about:blank"
    assert browser.execute_cdp_cmd("Network.getAllCookies", {})["cookies"] == []


def test_serve_stops_with_the_browser_still_connected(browser):  # noqa: F811
    with serve(throwaway_app()) as base:
        assert base.startswith("http://127.0.0.1:")
        browser.get(base + "/")
        wait(browser).until(EC.visibility_of_element_located((By.ID, "check")))
        port = urlsplit(base).port
        assert port
    # The browser's keep-alive connection did not keep the server running: nothing listens there now.
    with socket.socket() as sock:
        sock.settimeout(5)
        assert sock.connect_ex(("127.0.0.1", port)) != 0
