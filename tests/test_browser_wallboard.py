"""The wallboard and the agent's screen pop in a real headless Chromium: the wallboard follows the queue
events applied while it is open, the agent's page opens a connecting call's ticket by itself, both in zh-CN
and en. Screenshots go to var/screenshots/wallboard-*.png and agent-*.png for a person to look at."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from queues import events as ev
from tests.browser import browser, live_app, screenshot, wait  # noqa: F401 (fixtures)
from tests.test_web_pages import queued
from tests.test_web_queues import agent_tokens, agents, busy_minute, happen, served, services  # noqa: F401 (fixtures)
from tests.test_web_support import app, tokens  # noqa: F401 (fixtures)

POPPED = "2026030200009"


def _shot(browser, services, name: str):  # noqa: F811
    backend = urlsplit(services.settings.database_url).scheme
    return screenshot(browser, f"{name}-{backend}")


def _log_in(browser, base: str, token: str, page: str) -> None:  # noqa: F811
    browser.get(base + page)
    wait(browser).until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(token)
    browser.find_element(By.ID, "login").click()
    wait(browser).until(lambda driver: urlsplit(driver.current_url).path == page.split("?")[0])


def _text(browser, element_id: str) -> str:  # noqa: F811
    return browser.find_element(By.ID, element_id).text


def _tile(browser, tile: str) -> str:  # noqa: F811
    return browser.find_element(By.CSS_SELECTOR, f"#{tile} .tile-value").text


def _shows(tile: str, value: str):
    def check(driver) -> bool:
        try:
            return _tile(driver, tile) == value
        except Exception:  # the board is being drawn again: look once more
            return False
    return check


def test_the_wallboard_follows_the_queues_live(browser, served, services, agents, tokens):  # noqa: F811
    t = busy_minute(services)
    _log_in(browser, served, tokens["supervisor"], "/desk/wallboard")
    wait(browser).until(EC.text_to_be_present_in_element_attribute((By.ID, "live-status"), "data-state", "live"))
    assert _text(browser, "live-status") == "实时"
    assert [_tile(browser, tile) for tile in ("t-waiting", "t-offered", "t-answered", "t-abandoned", "t-service")] == [
        "1", "4", "1", "2", "33.3%"]
    assert "其中短时放弃 1" in _text(browser, "t-abandoned")
    assert "late" in browser.find_element(By.ID, "t-connection").get_attribute("class")  # 33.3 % < 95 %
    assert "用餐" in _text(browser, "agents") and "王芳" in _text(browser, "agents")
    assert "+86138****8000" in _text(browser, "abandoned") and "+86138****8000" in _text(browser, "call-backs")
    assert "Erlang C" in _text(browser, "staffing")
    _shot(browser, services, "wallboard-zh")
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    _shot(browser, services, "wallboard-zh-lists")

    happen(services, ev.CallerJoined(t + 50, "water", "c5", caller="13600136000"),
           ev.CallerJoined(t + 51, "general", "c6", caller="13500135000"),
           ev.MemberPaused(t + 52, "water", "1002", False))
    wait(browser).until(_shows("t-offered", "6"))
    wait(browser).until(_shows("t-waiting", "3"))
    wait(browser).until(lambda driver: "用餐" not in _text(driver, "agents"))
    assert browser.find_element(By.CSS_SELECTOR, '#queues tr[data-queue="water"]').text.split()[1] == "2"
    _shot(browser, services, "wallboard-zh-live")

    browser.find_element(By.CSS_SELECTOR, '.langs a[hreflang="en"]').click()
    wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Wallboard"))
    wait(browser).until(EC.text_to_be_present_in_element_attribute((By.ID, "live-status"), "data-state", "live"))
    assert _text(browser, "live-status") == "Live"
    assert "Offered today" in _text(browser, "t-offered") and _tile(browser, "t-offered") == "6"
    assert "Whole hotline" in _text(browser, "queues") and "Available" in _text(browser, "agents")
    happen(services, ev.CallerAbandoned(t + 60, "water", "c5", wait_seconds=10, caller="13600136000"))
    wait(browser).until(_shows("t-abandoned", "3"))
    assert "136****6000" in _text(browser, "abandoned")
    _shot(browser, services, "wallboard-en")


def test_the_agents_page_opens_the_ticket_of_a_call_that_connects(browser, served, services, agents,  # noqa: F811
                                                                   agent_tokens):
    queued(services, POPPED)
    busy_minute(services)
    _log_in(browser, served, agent_tokens["1001"], "/desk/tickets")
    chip = wait(browser).until(EC.visibility_of_element_located((By.ID, "agent-state")))
    assert chip.text == "空闲"

    Select(browser.find_element(By.ID, "agent-reason")).select_by_visible_text("培训")
    browser.find_element(By.ID, "agent-pause").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "已请求示忙"))
    assert services.queue_control.asked == [("pause", "PJSIP/agent1001", True, "training", "")]
    assert _text(browser, "agent-state") == "空闲"  # asked, not done: Asterisk has not said so yet
    t = time.time()
    happen(services, ev.MemberPaused(t, "water", "1001", True, "training"),
           ev.MemberPaused(t, "general", "1001", True, "training"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "agent-state"), "示忙"))
    assert "培训" in _text(browser, "agent-detail")
    assert browser.find_element(By.ID, "agent-unpause").is_displayed()
    assert not browser.find_element(By.ID, "agent-pause").is_displayed()
    _shot(browser, services, "agent-panel-paused")

    happen(services, ev.MemberPaused(t + 1, "water", "1001", False), ev.MemberPaused(t + 1, "general", "1001", False))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "agent-state"), "空闲"))
    happen(services, ev.CallerJoined(t + 2, "water", "c9", caller="13600136000", ticket=POPPED),
           ev.AgentRang(t + 3, "water", "c9", "1001", "PJSIP/agent1001"),
           ev.CallAnswered(t + 5, "water", "c9", "1001", hold_seconds=3, ticket=POPPED))
    wait(browser).until(lambda driver: urlsplit(driver.current_url).path == f"/desk/tickets/{POPPED}")
    wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), POPPED))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "agent-state"), "通话中"))
    assert POPPED in _text(browser, "agent-detail")
    _shot(browser, services, "agent-screen-pop")

    browser.get(served + "/desk/tickets?lang=en")  # back to the list during the call: no second pop
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "agent-state"), "On a call"))
    happen(services, ev.CallCompleted(t + 60, "water", "c9", "1001", hold_seconds=3, talk_seconds=55))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "agent-state"), "Available"))
    assert urlsplit(browser.current_url).path == "/desk/tickets"
    assert "Log out of queues" in _text(browser, "agent-panel")
    _shot(browser, services, "agent-panel-en")
