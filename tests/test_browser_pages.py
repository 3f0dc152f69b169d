"""The desk pages in a real headless Chromium: an agent registers and dispatches a call's ticket, the
department accepts and replies, the supervisor watches an urgent ticket's countdown. Screenshots of each
page go to var/screenshots/desk-*.png for a person to look at."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from orders.cases import Casework, MoveFields
from tests.browser import browser, live_app, screenshot, wait  # noqa: F401 (fixtures)
from tests.test_web_pages import AGENT, DISPATCH, REGISTER, SECRET, desk, queued, work  # noqa: F401 (desk: fixture)
from tests.test_web_support import app, services, tokens  # noqa: F401 (fixtures)

NUMBER = "2026030200001"
RED = "rgba(198, 40, 40, 1)"  # --late in desk.css


def _shot(browser, app, name: str):  # noqa: F811
    backend = urlsplit(app.extensions["hotline"].settings.database_url).scheme
    return screenshot(browser, f"desk-{name}-{backend}")


def _log_in(browser, base: str, token: str, page: str) -> None:  # noqa: F811
    """Open ``page``; the desk sends a stranger to the login form, then back to ``page``."""
    browser.get(base + page)
    field = wait(browser).until(EC.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token)
    browser.find_element(By.ID, "login").click()
    wait(browser).until(lambda driver: urlsplit(driver.current_url).path == page.split("?")[0])


def _flash(browser, words: str) -> None:  # noqa: F811
    """Wait for the next page's flash message. The page being left may still be read while it goes (its
    flash of the previous move, then a node that no longer belongs to the document): read again then."""

    def shown(driver) -> bool:
        try:
            return words in driver.find_element(By.CSS_SELECTOR, "p.flash").text
        except WebDriverException:  # no flash yet, a stale node, a node of a document being replaced
            return False

    wait(browser).until(shown)


def _into_view(browser, element) -> None:  # noqa: F811
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)


def test_an_agent_registers_a_call_and_dispatches_it_as_the_catalogue_suggests(  # noqa: F811
        browser, live_app, app, desk, tokens):
    queued(desk, NUMBER, SECRET, ivr_path="language:1>main:2")
    base = live_app(app)
    _log_in(browser, base, tokens["agent"], f"/desk/tickets/{NUMBER}")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"工单 {NUMBER}"
    assert browser.find_element(By.ID, "status").text == "排队中"
    assert "+86" + SECRET in browser.find_element(By.ID, "caller").text
    assert browser.find_element(By.ID, "who").text == "test-agent · 话务员"

    category = browser.find_element(By.ID, "register-category")
    category.clear()
    category.send_keys("water-outage")
    browser.find_element(By.ID, "register-summary").send_keys("小区停水一天，市民要求尽快恢复供水")
    browser.find_element(By.ID, "register-address").send_keys("龙华区滨海大道 1 号")
    browser.find_element(By.ID, "register-district").send_keys("longhua")
    browser.find_element(By.ID, "register-confidential").click()
    _shot(browser, app, "agent-register")
    browser.find_element(By.ID, "do-register").click()
    _flash(browser, "工单已登记")
    assert browser.find_element(By.ID, "status").text == "已登记"

    suggestion = browser.find_element(By.ID, "suggestion")
    assert suggestion.text.startswith("派单目录建议：主办 自来水公司，协办 公安局")
    lead = Select(browser.find_element(By.ID, "dispatch-lead"))
    assert lead.first_selected_option.get_attribute("value") == "water"
    checked = {box.get_attribute("value") for box in
               browser.find_elements(By.CSS_SELECTOR, "#dispatch-supporting input:checked")}
    assert checked == {"police"}
    _into_view(browser, suggestion)
    _shot(browser, app, "agent-dispatch-suggested")
    browser.find_element(By.ID, "do-dispatch").click()
    _flash(browser, "工单已派单")
    assert browser.find_element(By.ID, "status").text == "已派单"
    assert browser.find_element(By.ID, "lead").text == "自来水公司"
    _shot(browser, app, "agent-dispatched")
    browser.find_element(By.PARTIAL_LINK_TEXT, "返回列表").click()
    row = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#ticket-list tbody tr")))
    assert NUMBER in row.text and "已派单" in row.text and "保密" in row.text
    _shot(browser, app, "agent-tickets")

    ticket = desk.tickets.get(NUMBER)
    assert (ticket.status, ticket.department, ticket.supporting, ticket.confidential) == (
        "dispatched", "water", ("police",), True)
    assert ticket.summary == "小区停水一天，市民要求尽快恢复供水"
    assert [e.actor for e in desk.casework.events(NUMBER)] == ["test-agent", "test-agent"]


def test_the_department_accepts_and_replies_from_its_inbox(browser, live_app, app, desk, tokens):  # noqa: F811
    queued(desk, NUMBER, SECRET, confidential=True)
    work(desk, NUMBER, ("register", MoveFields(category="water-outage", summary=f"停水，来电 {SECRET}",
                                               address="龙华区滨海大道 1 号", district="longhua")),
         ("dispatch", DISPATCH))
    base = live_app(app)
    _log_in(browser, base, tokens["dept:water"], "/desk/inbox")
    row = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#inbox tbody tr")))
    assert NUMBER in row.text and "已派单" in row.text and "主办" in row.text
    assert SECRET not in browser.page_source and SECRET[-8:] not in browser.page_source
    _shot(browser, app, "department-inbox")

    row.find_element(By.LINK_TEXT, NUMBER).click()
    wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), NUMBER))
    assert browser.find_element(By.ID, "caller").text == "市民要求保密，号码不予显示。"
    assert browser.find_element(By.ID, "summary").text == "停水，来电 ***********"
    _shot(browser, app, "department-ticket")
    browser.find_element(By.ID, "do-accept").click()
    _flash(browser, "工单已签收")
    assert browser.find_element(By.ID, "status").text == "已签收"

    note = browser.find_element(By.ID, "reply-note")
    note.send_keys("管道已抢修完毕，下午 3 点恢复供水。")
    browser.find_element(By.ID, "do-reply").click()
    _flash(browser, "答复已提交")
    assert browser.find_element(By.ID, "status").text == "已回复"
    assert "管道已抢修完毕" in browser.find_element(By.ID, "events").text
    assert SECRET not in browser.page_source
    _shot(browser, app, "department-replied")
    assert desk.tickets.get(NUMBER).status == "replied"
    browser.get(base + "/desk/inbox/2026030299999")
    message = wait(browser).until(EC.visibility_of_element_located((By.ID, "error-message")))
    assert message.text == "没有找到该页面或工单。"
    _shot(browser, app, "department-not-found")


def test_the_supervisor_sees_the_urgent_countdown(browser, live_app, app, desk, tokens):  # noqa: F811
    queued(desk, NUMBER, urgency="high")
    work(desk, NUMBER, ("register", REGISTER), ("dispatch", DISPATCH))  # must be accepted within 30 minutes
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    late = Casework(desk.session_factory, desk.casework.calendar, clock=lambda: past)
    queued(desk, "2026030200002", urgency="high", created_at=past - timedelta(minutes=3))
    version = late.apply("2026030200002", "register", AGENT, 1, REGISTER)
    late.apply("2026030200002", "dispatch", AGENT, version, MoveFields(lead="police"))
    desk.casework.scan_deadlines()

    base = live_app(app)
    _log_in(browser, base, tokens["supervisor"], "/desk/board")
    countdown = browser.find_element(By.ID, f"countdown-{NUMBER}")
    assert re.fullmatch(r"剩余 (29|28) 分钟( \d+ 秒)?", countdown.text), countdown.text
    # countdown.js takes over from the server's whole minutes and ticks every second.
    wait(browser).until(lambda _: re.fullmatch(r"剩余 (29|28) 分钟 \d+ 秒", countdown.text))
    overdue = browser.find_element(By.ID, "countdown-2026030200002")
    assert re.fullmatch(r"已超时 (29|30) 分钟 \d+ 秒", overdue.text), overdue.text
    assert overdue.value_of_css_property("color") == RED
    assert countdown.value_of_css_property("color") != RED
    assert "2026030200002" in browser.find_element(By.ID, "overdue").text
    assert "公安局" in browser.find_element(By.ID, "ranking").text
    _shot(browser, app, "supervisor-board")

    browser.find_element(By.LINK_TEXT, "English").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Supervisor board"))
    countdown = browser.find_element(By.ID, f"countdown-{NUMBER}")
    wait(browser).until(lambda _: re.fullmatch(r"(29|28) min \d+ s left", countdown.text))
    assert re.fullmatch(r"(29|30) min \d+ s overdue", browser.find_element(By.ID, "countdown-2026030200002").text)
    _shot(browser, app, "supervisor-board-en")


def test_the_board_works_without_javascript(browser, live_app, app, desk, tokens):  # noqa: F811
    queued(desk, NUMBER, urgency="high")
    work(desk, NUMBER, ("register", REGISTER), ("dispatch", DISPATCH))
    base = live_app(app)
    _log_in(browser, base, tokens["supervisor"], "/desk/board?lang=en")
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        browser.refresh()
        countdown = wait(browser).until(EC.visibility_of_element_located((By.ID, f"countdown-{NUMBER}")))
        assert re.fullmatch(r"(29|28) min left", countdown.text), countdown.text
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_login_logout_and_language_switch(browser, live_app, app, desk, tokens):  # noqa: F811
    base = live_app(app)
    browser.get(base + "/login?lang=en")
    wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Log in"))
    browser.find_element(By.ID, "token").send_keys("hl_not-a-token")
    browser.find_element(By.ID, "login").click()
    problem = wait(browser).until(EC.visibility_of_element_located((By.ID, "problem")))
    assert problem.text == "That token is unknown or has been revoked."
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""
    _shot(browser, app, "login-refused-en")
    browser.find_element(By.ID, "token").send_keys(tokens["dept:water"])
    browser.find_element(By.ID, "login").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Inbox"))
    assert "Your department has no open ticket." in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.ID, "logout").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "You have logged out."))
    browser.get(base + "/desk/inbox")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "token")))
