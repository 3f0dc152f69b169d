"""Browser-test fixtures: a Flask app served for real on loopback, and Debian's headless Chromium driving it.

A test module imports the fixtures by name (this module has no tests)::

    from tests.browser import browser, live_app  # noqa: F401 (fixtures)
    from tests.browser import screenshot, wait

    def test_page(browser, live_app, app):
        base = live_app(app)                     # http://127.0.0.1:PORT, served until the test ends
        browser.get(base + "/some/page")
        heading = wait(browser).until(EC.visibility_of_element_located((By.TAG_NAME, "h1")))
        assert heading.text == "..."
        screenshot(browser, "some-page")         # var/screenshots/some-page.png

* :func:`serve` ``(app) -> ContextManager[str]`` serves any WSGI app with waitress on a port the OS picks
  (127.0.0.1 only) in a daemon thread and yields its base URL; the server is shut down on exit.
* ``live_app`` (function scope) is the fixture form: a callable ``live_app(app) -> base URL``; every app it
  served is shut down when the test ends.
* ``browser`` (function scope over one Chromium per module) is a ``selenium.webdriver.Chrome``: headless,
  1280x900, zh-CN. Each test starts on ``about:blank`` with no cookies; the browser quits when the module is
  done. When Chromium or its driver is missing the test is skipped (``.ci/run`` installs both).
* :func:`screenshot` ``(driver, name) -> Path`` saves a PNG under ``var/screenshots/`` for a person to look at.
* :func:`wait` ``(driver, timeout=WAIT_TIMEOUT) -> WebDriverWait``: every wait is an explicit, bounded one.
  No implicit waits and no sleeps.

Only Debian's ``chromium`` and ``chromium-driver`` packages are used, at fixed paths: Selenium Manager is never
asked for a driver or a browser (it would try to download one), see :func:`start_chrome`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock
from urllib.parse import urlsplit

import pytest
import waitress
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.support.ui import WebDriverWait
from waitress import wasyncore

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"

CHROMIUM = os.environ.get("HOTLINE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HOTLINE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
MISSING_REASON = "chromium and chromium-driver are not installed; .ci/run installs them"

LOOPBACK = "127.0.0.1"
WAIT_TIMEOUT = 10.0  # seconds an explicit wait may take before the test fails
PAGE_LOAD_TIMEOUT = 30.0  # seconds driver.get() may take
SCRIPT_TIMEOUT = 10.0  # seconds an async script may take
STOP_TIMEOUT = 10.0  # seconds the server thread gets to finish at shutdown

CHROME_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root (CI too), where Chromium's sandbox refuses to start
    "--disable-dev-shm-usage",  # /dev/shm can be small in containers; use /tmp instead
    "--disable-gpu",
    "--window-size=1280,900",
    "--lang=zh-CN",
)


# --- serving an app ------------------------------------------------------------------------------------

@contextlib.contextmanager
def serve(app, *, threads: int = 4) -> Iterator[str]:
    """Serve the WSGI ``app`` with waitress on a free loopback port; yield ``http://127.0.0.1:PORT``.

    The listening socket is bound before this yields, so the URL can be used at once. On exit the server,
    its open connections (a browser keeps some alive) and its worker threads are all closed.
    """
    server = waitress.create_server(app, host=LOOPBACK, port=0, threads=threads)
    thread = threading.Thread(target=server.run, name=f"live-app-{server.effective_port}", daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.effective_port}"
    finally:
        # Closed from the server's own loop thread (closing from here races its select()), and every
        # channel with it: the loop only ends once its map is empty, and the browser's keep-alive
        # connections would otherwise keep it running.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(STOP_TIMEOUT)
        server.task_dispatcher.shutdown(timeout=STOP_TIMEOUT)
        if thread.is_alive():  # pragma: no cover - a hung request handler
            raise RuntimeError(f"the live app on port {server.effective_port} did not stop in {STOP_TIMEOUT} s")


@pytest.fixture
def live_app() -> Iterator[Callable[..., str]]:
    """``live_app(app) -> base URL``: serve a Flask app (built by the test) until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda app, **kwargs: stack.enter_context(serve(app, **kwargs))


# --- the browser ---------------------------------------------------------------------------------------

def browser_available() -> bool:
    return all(os.path.isfile(path) and os.access(path, os.X_OK) for path in (CHROMIUM, CHROMEDRIVER))


def chrome_options() -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in CHROME_ARGUMENTS:
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh"})
    return options


def _no_selenium_manager(*args, **kwargs):
    raise AssertionError("Selenium Manager was asked for a driver; tests/browser.py passes explicit paths")


def start_chrome() -> webdriver.Chrome:
    """A headless Chromium from Debian's packages, with its chromedriver given explicitly.

    Selenium Manager is patched to fail while the driver starts: with the Service path set it is skipped
    anyway, and this keeps a future Selenium from quietly downloading a browser or a driver instead.
    """
    with mock.patch.object(SeleniumManager, "binary_paths", _no_selenium_manager):
        driver = webdriver.Chrome(options=chrome_options(), service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)  # every wait is an explicit WebDriverWait
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    driver.set_script_timeout(SCRIPT_TIMEOUT)
    return driver


_DRIVER = pytest.StashKey[webdriver.Chrome]()


def _module_chrome(request: pytest.FixtureRequest) -> webdriver.Chrome:
    """The Chromium of the test's module, started on first use and quit when the module is done.

    Kept on the module's node rather than in a module-scoped fixture so that test modules need to import
    only ``browser`` (a fixture another fixture requests must be importable by name from the test module).
    """
    module = request.node.getparent(pytest.Module)
    driver = module.stash.get(_DRIVER, None)
    if driver is None:
        if not browser_available():
            pytest.skip(MISSING_REASON)
        driver = module.stash[_DRIVER] = start_chrome()

        def quit_driver() -> None:
            del module.stash[_DRIVER]
            driver.quit()

        module.addfinalizer(quit_driver)
    return driver


def _reset(driver: webdriver.Chrome) -> None:
    """Forget what the last test left: the storage of the page it ended on, every cookie, the cache."""
    with contextlib.suppress(WebDriverException):
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(driver.current_url))
        if origin.startswith(("http://", "https://")):
            driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[webdriver.Chrome]:
    """The module's Chromium (one per test module), on ``about:blank`` with no cookies for each test."""
    driver = _module_chrome(request)
    _reset(driver)
    yield driver
    _reset(driver)


def wait(driver: webdriver.Chrome, timeout: float = WAIT_TIMEOUT) -> WebDriverWait:
    """An explicit wait with a bounded timeout: ``wait(browser).until(EC.…)``."""
    return WebDriverWait(driver, timeout)


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save what the browser shows as ``var/screenshots/NAME.png`` (overwritten each run); return the path."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".png")).strip("-.") or "screenshot"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{stem}.png"
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"the browser could not save a screenshot to {path}")
    return path
