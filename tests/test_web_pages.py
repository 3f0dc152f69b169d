"""The desk pages with Flask's test client: login, CSRF, roles, every move form, stale versions, the
department's view of a confidential ticket, the board, and both languages (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from orders.caller import mask
from orders.cases import Actor, Casework, MoveFields
from orders.lifecycle import MOVES, PUBLIC_STATE, Move, TicketStatus
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore
from web import i18n, pages
from web.auth import create_token, revoke_token
from web.tokens import Role
from tests.test_web_support import app, client, services, tokens  # noqa: F401 (fixtures)

TEMPLATES = Path(pages.__file__).parent / "templates"
SECRET = "13912345678"  # a confidential citizen
OPEN_CALLER = "13800138000"  # a citizen who did not ask for confidentiality
AGENT = Actor("setup-agent", Role.agent)
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # a Monday, 09:00 in Beijing


# --- fixtures and helpers ------------------------------------------------------------------------------

@pytest.fixture
def desk(services):  # noqa: F811
    """Three departments and a catalogue rule: water-outage goes to water, supported by police."""
    departments = services.departments
    departments.create("water", "自来水公司", "Water company")
    departments.create("police", "公安局", "Police")
    departments.create("roads", "市政道路", "Roads")
    departments.put_rule("water-outage", "water", supporting=("police",), kind="help", answer_days=5)
    return services


def queued(services, number: str, caller: str = OPEN_CALLER, **changes) -> str:  # noqa: F811
    """Save a ticket the IVR left queued for an agent; returns its number."""
    values = dict(number=number, revision=1, caller_raw=caller, caller_e164="+86" + caller, caller_kind="mobile",
                  created_at=T0, status="queued", ivr_path="language:1>main:2", uniqueid=f"1772413200.{number}",
                  call_channel=f"SIP/{caller}-0000001a", dialed_number="12345", outcome="routed")
    values.update(changes)
    assert TicketStore(services.session_factory).save(TicketSnapshot(**values))
    return number


def work(services, number: str, *moves: tuple, actor: Actor = AGENT) -> int:  # noqa: F811
    """Make moves on a ticket as the setup would (not through the pages); returns the last version."""
    version = services.tickets.get(number).version
    for move, fields, *who in moves:
        version = services.casework.apply(number, move, who[0] if who else actor, version, fields)
    return version


REGISTER = MoveFields(category="water-outage", summary="No water since morning", address="1 Binhai Road",
                      district="longhua")
DISPATCH = MoveFields(lead="water", supporting=("police",))
WATER = Actor("water-desk", Role.department, "water")


def dispatched(services, number: str, caller: str = OPEN_CALLER, **changes) -> str:  # noqa: F811
    queued(services, number, caller, **changes)
    work(services, number, ("register", REGISTER), ("dispatch", DISPATCH))
    return number


def login(client, token: str, lang: str | None = None):  # noqa: F811
    page = client.get("/login" + (f"?lang={lang}" if lang else ""))
    assert page.status_code == 200
    return client.post("/login", data={"csrf": csrf_of(page), "token": token})


def csrf_of(response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', response.get_data(as_text=True)).group(1)


def session_csrf(client) -> str:  # noqa: F811
    with client.session_transaction() as session:
        return session["csrf"]


def post_move(client, path: str, move: str, version: int, **fields):  # noqa: F811
    data = {"csrf": session_csrf(client), "version": str(version), **fields}
    return client.post(f"{path}/{move}", data=data)


def text(response) -> str:
    return response.get_data(as_text=True)


# --- words -----------------------------------------------------------------------------------------------

def test_every_key_exists_in_both_languages():
    assert set(i18n.STRINGS) == set(i18n.LANGUAGES) == {"zh-CN", "en"}
    zh, en = i18n.STRINGS["zh-CN"], i18n.STRINGS["en"]
    assert sorted(set(zh) ^ set(en)) == []
    assert all(value.strip() for value in (*zh.values(), *en.values()))
    for key in zh:  # the same placeholders, so a sentence never loses its number in one language
        assert set(re.findall(r"\{(\w+)\}", zh[key])) == set(re.findall(r"\{(\w+)\}", en[key])), key


def test_statuses_moves_and_public_states_have_labels_in_both_languages():
    for lang in i18n.LANGUAGES:
        words = i18n.STRINGS[lang]
        assert {f"status.{s.value}" for s in TicketStatus} <= set(words)
        assert {f"move.{m.value}" for m in Move} | {f"move_help.{m.value}" for m in Move} <= set(words)
        assert {f"done.{m.value}" for m in Move} <= set(words)
        assert {f"public.{state}" for state, _ in PUBLIC_STATE.values()} <= set(words)
        assert {f"public_detail.{d}" for _, d in PUBLIC_STATE.values() if d} <= set(words)
        assert {f"role.{r.value}" for r in Role} <= set(words)
    assert i18n.STRINGS["zh-CN"]["status.dispatched"] != i18n.STRINGS["en"]["status.dispatched"]


def test_templates_use_only_known_keys():
    keys, prefixes = set(), set()
    for path in TEMPLATES.glob("*.html"):
        source = path.read_text(encoding="utf-8")
        keys |= set(re.findall(r"""\bt\(\s*["']([^"']+)["']\s*[,)]""", source))
        prefixes |= set(re.findall(r"""\bt\(\s*["']([^"']+)["']\s*~""", source))  # t("status." ~ status)
    assert keys and prefixes, "no t(...) call found in the templates"
    known = set(i18n.STRINGS["en"])
    assert sorted(keys - known) == []
    assert sorted(p for p in prefixes if not any(key.startswith(p) for key in known)) == []


def test_the_language_comes_from_the_query_then_the_cookie():
    assert i18n.choose(None, None) == "zh-CN"
    assert i18n.choose("en", None) == "en"
    assert i18n.choose(None, "en") == "en"
    assert i18n.choose("zh-CN", "en") == "zh-CN"
    assert i18n.choose("fr", "xx") == "zh-CN"


# --- the session key -------------------------------------------------------------------------------------

def test_session_secret_is_made_once_private_and_reused(tmp_path):
    folder = tmp_path / "data" / "deeper"
    key = pages.session_secret(folder)
    path = folder / "web-secret"
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pages.session_secret(folder) == key
    assert [p.name for p in folder.iterdir()] == ["web-secret"]  # no temporary file left behind


def test_a_truncated_session_secret_is_refused(tmp_path):
    (tmp_path / "web-secret").write_bytes(b"short")
    with pytest.raises(pages.SessionSecretError, match="delete it"):
        pages.session_secret(tmp_path)


def test_the_app_signs_sessions_with_the_data_dirs_key(app, services):  # noqa: F811
    assert app.secret_key == (services.settings.data_dir / "web-secret").read_bytes()


# --- logging in and out ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/desk/tickets", "/desk/tickets/2026030200001", "/desk/inbox",
                                  "/desk/board", "/logout"])
def test_a_stranger_is_sent_to_the_login_page(client, path):  # noqa: F811
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_login_opens_the_roles_desk_and_logout_closes_it(client, desk, tokens):  # noqa: F811
    response = login(client, tokens["agent"])
    assert response.status_code == 302 and response.headers["Location"] == "/desk/tickets"
    page = client.get("/desk/tickets")
    assert page.status_code == 200 and "test-agent" in text(page) and "话务员" in text(page)
    with client.session_transaction() as session:
        stored = repr(dict(session))
    assert tokens["agent"] not in stored  # only the token's hash is kept
    cookie = client.get_cookie("session")
    assert tokens["agent"] not in cookie.value
    assert cookie.http_only and cookie.same_site == "Lax"

    confirm = client.get("/logout")
    assert confirm.status_code == 200
    response = client.post("/logout", data={"csrf": csrf_of(confirm)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "你已退出登录" in text(client.get("/login"))
    assert client.get("/desk/tickets").status_code == 302


@pytest.mark.parametrize("role,home", [("supervisor", "/desk/board"), ("dept:water", "/desk/inbox")])
def test_each_role_lands_on_its_own_page(client, desk, tokens, role, home):  # noqa: F811
    assert login(client, tokens[role]).headers["Location"] == home
    assert client.get("/").headers["Location"] == home


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001")
    asked = client.get("/desk/tickets/2026030200001")
    page = client.get(asked.headers["Location"])
    response = client.post("/login", data={"csrf": csrf_of(page), "token": tokens["agent"],
                                           "next": "/desk/tickets/2026030200001"})
    assert response.headers["Location"] == "/desk/tickets/2026030200001"
    client.post("/logout", data={"csrf": session_csrf(client)})
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        page = client.get("/login")
        response = client.post("/login", data={"csrf": csrf_of(page), "token": tokens["agent"], "next": target})
        assert response.headers["Location"] == "/desk/tickets"
        client.post("/logout", data={"csrf": session_csrf(client)})


def test_a_wrong_token_is_refused_and_never_shown_back(client, desk, tokens):  # noqa: F811
    page = client.get("/login")
    guess = "hl_" + "x" * 43
    response = client.post("/login", data={"csrf": csrf_of(page), "token": guess})
    assert response.status_code == 403
    assert "令牌无效或已被吊销" in text(response)
    assert guess not in text(response)
    assert client.get("/desk/tickets").status_code == 302
    empty = client.post("/login", data={"csrf": csrf_of(page), "token": "  "})
    assert empty.status_code == 400


def test_revoking_the_token_ends_its_desk_session(client, desk, tokens, session_factory):  # noqa: F811
    login(client, tokens["agent"])
    assert client.get("/desk/tickets").status_code == 200
    revoke_token(session_factory, "test-agent")
    assert client.get("/desk/tickets").status_code == 302


def test_an_old_session_must_log_in_again(client, desk, tokens):  # noqa: F811
    login(client, tokens["agent"])
    with client.session_transaction() as session:
        session["desk"] = {**session["desk"], "since": session["desk"]["since"] - pages.SESSION_SECONDS - 1}
    assert client.get("/desk/tickets").status_code == 302


# --- CSRF ------------------------------------------------------------------------------------------------

def test_forms_without_the_sessions_csrf_token_are_refused(client, desk, tokens):  # noqa: F811
    page = client.get("/login")
    assert client.post("/login", data={"token": tokens["agent"]}).status_code == 400
    assert client.post("/login", data={"csrf": "forged", "token": tokens["agent"]}).status_code == 400
    assert client.get("/desk/tickets").status_code == 302  # not logged in by either
    client.post("/login", data={"csrf": csrf_of(page), "token": tokens["agent"]})

    queued(desk, "2026030200001")
    fields = {"version": "1", "category": "water-outage", "summary": "x"}
    refused = client.post("/desk/tickets/2026030200001/register", data=fields)
    assert refused.status_code == 400
    assert "请求无效" in text(refused)
    forged = client.post("/desk/tickets/2026030200001/register", data={**fields, "csrf": "x" * 43})
    assert forged.status_code == 400
    assert desk.tickets.get("2026030200001").status == "queued"
    assert client.post("/logout", data={}).status_code == 400
    assert client.get("/desk/tickets").status_code == 200  # still logged in


# --- roles -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role,path", [
    ("dept:water", "/desk/tickets"), ("dept:water", "/desk/tickets/2026030200001"), ("dept:water", "/desk/board"),
    ("agent", "/desk/inbox"), ("agent", "/desk/inbox/2026030200001"), ("agent", "/desk/board"),
    ("admin", "/desk/tickets"), ("supervisor", "/desk/inbox"),
])
def test_pages_refuse_the_wrong_role(client, desk, tokens, role, path):  # noqa: F811
    dispatched(desk, "2026030200001", SECRET, confidential=True)
    login(client, tokens[role])
    response = client.get(path)
    assert response.status_code == 403
    assert "你的角色无权访问此页面" in text(response)
    assert SECRET not in text(response)


def test_a_department_cannot_post_an_agents_move(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001")
    login(client, tokens["dept:water"])
    response = post_move(client, "/desk/tickets/2026030200001", "register", 1, category="x", summary="y")
    assert response.status_code == 403
    assert desk.tickets.get("2026030200001").status == "queued"


def test_admin_gets_a_page_saying_there_is_no_desk(client, desk, tokens):  # noqa: F811
    login(client, tokens["admin"])
    response = client.get("/")
    assert response.status_code == 200 and "该角色没有工作台页面" in text(response)


def test_inbox_lists_only_the_departments_open_tickets(client, desk, tokens):  # noqa: F811
    dispatched(desk, "2026030200001")  # water leads, police supports
    queued(desk, "2026030200002")
    work(desk, "2026030200002", ("register", REGISTER), ("dispatch", MoveFields(lead="police")))
    queued(desk, "2026030200003")
    work(desk, "2026030200003", ("register", REGISTER), ("dispatch", MoveFields(lead="water")),
         ("accept", MoveFields(), WATER), ("reply", MoveFields(note="fixed"), WATER), ("close", MoveFields()))
    queued(desk, "2026030200004")  # never dispatched

    login(client, tokens["dept:water"])
    page = text(client.get("/desk/inbox"))
    assert "2026030200001" in page
    assert not {"2026030200002", "2026030200003", "2026030200004"} & set(re.findall(r"2026030200\d{3}", page))
    assert "主办" in page

    client.post("/logout", data={"csrf": session_csrf(client)})
    login(client, tokens["dept:police"])
    page = text(client.get("/desk/inbox"))
    assert set(re.findall(r"2026030200\d{3}", page)) == {"2026030200001", "2026030200002"}
    assert "协办" in page  # police supports 0001
    supporting = text(client.get("/desk/inbox/2026030200001"))  # only the lead accepts
    assert 'id="move-accept"' not in supporting and "当前状态下你无可进行的操作" in supporting


@pytest.mark.parametrize("number", ["2026030200002", "2026030200009", "abc", "1" * 25])
def test_another_departments_ticket_is_a_404_like_a_missing_one(client, desk, tokens, number):  # noqa: F811
    queued(desk, "2026030200002", SECRET, confidential=True)
    work(desk, "2026030200002", ("register", REGISTER), ("dispatch", MoveFields(lead="roads")))
    login(client, tokens["dept:water"])
    page = client.get(f"/desk/inbox/{number}")
    assert page.status_code == 404
    assert "没有找到该页面或工单" in text(page)
    move = post_move(client, f"/desk/inbox/{number}", "accept", 3)
    assert move.status_code == 404
    for response in (page, move):
        assert SECRET not in text(response) and "市政道路" not in text(response)
    if number == "2026030200002":
        assert desk.tickets.get(number).status == "dispatched"


# --- the agent's ticket page -----------------------------------------------------------------------------

def test_the_agent_sees_the_call_the_callers_earlier_tickets_and_the_history(client, desk, tokens):  # noqa: F811
    for day in range(1, 13):  # 12 earlier tickets of the same caller, one an hour
        queued(desk, f"20260301{day:05d}", SECRET, created_at=T0 - timedelta(hours=day))
    queued(desk, "2026030100099", "13700000000", created_at=T0 - timedelta(hours=1))  # another caller
    queued(desk, "2026030200001", SECRET, ivr_path="language:1>main:3>urgent:1")
    work(desk, "2026030200001", ("register", REGISTER))

    login(client, tokens["agent"])
    response = client.get("/desk/tickets/2026030200001")
    assert response.status_code == 200
    page = text(response)
    assert "+86" + SECRET in page  # the agent has the citizen on the line
    assert "language:1 › main:3 › urgent:1" in page
    assert "已登记" in page and "待处理" in page  # status and public state
    earlier = re.search(r'id="earlier".*?</section>', page, re.S).group(0)
    shown = re.findall(r">(2026030\d{6})</a>", earlier)
    assert shown == [f"20260301{hour:05d}" for hour in range(1, 11)]  # newest first, 10 of 12
    assert "2026030100099" not in earlier and "2026030200001" not in earlier
    events = re.search(r'id="events".*?</section>', page, re.S).group(0)
    assert "setup-agent" in events and "登记" in events and "排队中 → 已登记" in events
    assert "No water since morning" in page


def test_ticket_search_and_recent_list(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001")
    queued(desk, "2026030200002", created_at=T0 + timedelta(minutes=5))
    login(client, tokens["supervisor"])
    listing = text(client.get("/desk/tickets"))
    assert listing.index("2026030200002") < listing.index("2026030200001")
    found = client.get("/desk/tickets?number=2026030200001")
    assert found.status_code == 302 and found.headers["Location"] == "/desk/tickets/2026030200001"
    missing = client.get("/desk/tickets?number=2026030299999")
    assert missing.status_code == 404 and "没有工单号为 2026030299999 的工单" in text(missing)
    assert client.get("/desk/tickets/2026030299999").status_code == 404
    filtered = text(client.get("/desk/tickets?status=registered"))
    assert "2026030200001" not in filtered and "没有符合条件的工单" in filtered


def test_dispatch_form_is_prefilled_from_the_catalogue(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001")
    work(desk, "2026030200001", ("register", REGISTER))
    login(client, tokens["agent"])
    page = text(client.get("/desk/tickets/2026030200001"))
    form = re.search(r'<form[^>]*id="move-dispatch".*?</form>', page, re.S).group(0)
    assert "派单目录建议：主办 自来水公司，协办 公安局（求助，5 个工作日内答复）" in form
    assert re.search(r'<option value="water" selected>', form)
    assert re.search(r'value="police" checked', form) and not re.search(r'value="roads" checked', form)
    assert "roads" in form  # every active department can be chosen
    english = text(client.get("/desk/tickets/2026030200001?lang=en"))
    assert "Suggested by the catalogue: lead Water company, supporting Police (help, answer within 5" in english


def test_without_a_catalogue_rule_the_agent_chooses(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001")
    work(desk, "2026030200001", ("register", MoveFields(category="noise", summary="loud")))
    login(client, tokens["agent"])
    page = text(client.get("/desk/tickets/2026030200001"))
    assert "派单目录中没有此类别的规则" in page and " selected>" not in page.split('id="move-dispatch"')[1]


def test_every_move_through_its_form(client, desk, tokens):  # noqa: F811
    """register, dispatch, return, dispatch, accept, progress (supporting), reply, close, reopen, resolve,
    close, archive; and merge on a second ticket. Each through the page, as its role."""
    queued(desk, "2026030200001")
    queued(desk, "2026030200002")
    agent, water, police, supervisor = (tokens[k] for k in ("agent", "dept:water", "dept:police", "supervisor"))
    agent_path, inbox_path = "/desk/tickets/2026030200001", "/desk/inbox/2026030200001"
    steps = [
        (agent, agent_path, "register", dict(category="water-outage", summary="No water", address="Road 1",
                                             district="longhua", confidential="1"), "registered", "工单已登记"),
        (agent, agent_path, "dispatch", dict(lead="roads"), "dispatched", "工单已派单"),
        (None, "/desk/inbox/2026030200001", "return", dict(reason="not ours"), "returned", "工单已退回热线"),
        (agent, agent_path, "dispatch", dict(lead="water", supporting=["police"]), "dispatched", "工单已派单"),
        (water, inbox_path, "accept", {}, "accepted", "工单已签收"),
        (police, inbox_path, "progress", dict(note="patrol sent"), "in_progress", "办理进展已记录"),
        (water, inbox_path, "reply", dict(note="pipe repaired"), "replied", "答复已提交"),
        (agent, agent_path, "close", {}, "closed", "工单已办结"),
        (agent, agent_path, "reopen", dict(reason="still no water"), "reopened", "工单已重办"),
        (agent, agent_path, "resolve", dict(note="explained on the phone"), "resolved", "工单已直接答复办结"),
        (agent, agent_path, "close", {}, "closed", "工单已办结"),
        (supervisor, agent_path, "archive", {}, "archived", "工单已归档"),
    ]
    roads = create_token(desk.session_factory, "roads-desk", "department", "roads")
    current = None
    for token, path, move, fields, status, done in steps:
        token = token or roads
        if token != current:
            if current is not None:
                client.post("/logout", data={"csrf": session_csrf(client)})
            login(client, token)
            current = token
        page = client.get(path)
        assert page.status_code == 200, (move, text(page)[:300])
        assert f'id="move-{move}"' in text(page), move
        version = int(re.search(rf'id="move-{move}".*?name="version" value="(\d+)"', text(page), re.S).group(1))
        response = post_move(client, path, move, version, **fields)
        assert response.status_code == 302 and response.headers["Location"] == path, (move, text(response)[:500])
        assert done in text(client.get(path)), move
        assert desk.tickets.get("2026030200001").status == status, move
    ticket = desk.tickets.get("2026030200001")
    assert ticket.confidential and ticket.department == "water" and ticket.supporting == ("police",)
    events = desk.casework.events("2026030200001")
    assert [e.move for e in events] == [step[2] for step in steps]
    assert events[5].actor == "test-dept-police" and events[5].note == "patrol sent"

    client.post("/logout", data={"csrf": session_csrf(client)})
    login(client, agent)
    refused = post_move(client, "/desk/tickets/2026030200002", "merge", 1, into="2026030200001")
    assert refused.status_code == 400 and "archived" in text(refused)  # not into an archived ticket
    queued(desk, "2026030200003")
    response = post_move(client, "/desk/tickets/2026030200002", "merge", 1, into="2026030200003")
    assert response.status_code == 302
    merged = desk.tickets.get("2026030200002")
    assert (merged.status, merged.merged_into) == ("merged", "2026030200003")
    merged_page = text(client.get("/desk/tickets/2026030200002"))
    assert "已合并" in merged_page and "已关闭（重复诉求）" in merged_page and "2026030200003" in merged_page


def test_a_stale_version_changes_nothing_and_shows_the_ticket_again(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001")
    work(desk, "2026030200001", ("register", REGISTER))
    login(client, tokens["agent"])
    seen = text(client.get("/desk/tickets/2026030200001"))
    assert 'name="version" value="2"' in seen
    work(desk, "2026030200001", ("resolve", MoveFields(note="answered by a colleague")))  # now version 3

    response = post_move(client, "/desk/tickets/2026030200001", "merge", 2, into="2026030299999")
    assert response.status_code == 409
    page = text(response)
    assert "有人刚刚修改了这张工单，以下是最新内容" in page
    assert "已直接答复" in page and 'name="version" value="3"' in page and 'name="version" value="2"' not in page
    assert "answered by a colleague" in page
    ticket = desk.tickets.get("2026030200001")
    assert (ticket.status, ticket.version, ticket.merged_into) == ("resolved", 3, None)
    english = client.post("/desk/tickets/2026030200001/close?lang=en",
                          data={"csrf": session_csrf(client), "version": "2"})
    assert english.status_code == 409
    assert "Someone changed this ticket; here it is again" in text(english)
    assert desk.tickets.get("2026030200001").status == "resolved"


def test_a_refused_move_shows_why_and_keeps_what_was_typed(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001")
    login(client, tokens["agent"])
    missing = post_move(client, "/desk/tickets/2026030200001", "register", 1, category="water-outage",
                        summary="", address="Typed address 9")
    assert missing.status_code == 400
    assert "填写内容不完整或有误" in text(missing) and "register needs summary" in text(missing)
    assert 'value="Typed address 9"' in text(missing)
    assert desk.tickets.get("2026030200001").status == "queued"

    early = post_move(client, "/desk/tickets/2026030200001", "dispatch", 1, lead="water")
    assert early.status_code == 409 and "工单当前状态不允许此操作" in text(early)
    not_mine = post_move(client, "/desk/tickets/2026030200001", "accept", 1)
    assert not_mine.status_code == 403 and "你无权进行此操作" in text(not_mine)
    unknown = post_move(client, "/desk/tickets/2026030200001", "teleport", 1)
    assert unknown.status_code == 404
    bad_version = post_move(client, "/desk/tickets/2026030200001", "register", "one")
    assert bad_version.status_code == 400
    unknown_department = post_move(client, "/desk/tickets/2026030200001", "register", 1, category="c", summary="s")
    assert unknown_department.status_code == 302
    nowhere = post_move(client, "/desk/tickets/2026030200001", "dispatch", 2, lead="mars")
    assert nowhere.status_code == 400 and "no active department mars" in text(nowhere)
    assert desk.tickets.get("2026030200001").status == "registered"


def test_only_the_moves_allowed_now_have_forms(client, desk, tokens):  # noqa: F811
    dispatched(desk, "2026030200001")
    login(client, tokens["agent"])
    page = text(client.get("/desk/tickets/2026030200001"))
    assert set(re.findall(r'id="move-(\w+)"', page)) == set()
    assert "当前状态下你无可进行的操作" in page
    client.post("/logout", data={"csrf": session_csrf(client)})
    login(client, tokens["dept:water"])
    page = text(client.get("/desk/inbox/2026030200001"))
    assert set(re.findall(r'id="move-(\w+)"', page)) == {"accept", "return"}
    for move in ("accept", "return"):
        assert all(role == Role.department for role in MOVES[Move(move)].roles)


# --- what a department sees of the caller ----------------------------------------------------------------

def _number_forms(national: str) -> list[str]:
    spaced = f"{national[:3]} {national[3:7]} {national[7:]}"
    return ["+86" + national, "86" + national, national, national[-8:], spaced, spaced.replace(" ", "-"),
            mask("+86" + national), mask(national)]


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_a_confidential_citizens_number_never_reaches_a_department(client, desk, tokens, lang):  # noqa: F811
    queued(desk, "2026030200001", SECRET, confidential=True, ivr_path=f"language:1>callback:{SECRET}")
    spaced = f"{SECRET[:3]} {SECRET[3:7]} {SECRET[7:]}"
    work(desk, "2026030200001",
         ("register", MoveFields(category="water-outage", summary=f"Citizen at {SECRET} (or +86 {spaced}) has no water",
                                 address=f"Flat 3, call 86{SECRET} or {SECRET[-8:]}", district="longhua")),
         ("dispatch", DISPATCH),
         ("accept", MoveFields(), WATER),
         ("progress", MoveFields(note=f"rang {spaced.replace(' ', '-')}, no answer"), WATER))
    login(client, tokens["dept:water"], lang)
    pages_seen = [client.get(f"/desk/inbox?lang={lang}"), client.get(f"/desk/inbox/2026030200001?lang={lang}"),
                  post_move(client, "/desk/inbox/2026030200001", "reply", 1, note="done")]  # stale: shown again
    assert [p.status_code for p in pages_seen] == [200, 200, 409]
    for response in pages_seen:
        page = text(response)
        assert "2026030200001" in page
        for form in _number_forms(SECRET):
            assert form not in page, form
        assert re.sub(r"\D", "", SECRET) not in re.sub(r"[^\d]", "", re.sub(r"2026030200001", "", page))
    ticket_page = text(pages_seen[1])
    assert ("市民要求保密，号码不予显示" if lang == "zh-CN" else "The caller asked for confidentiality") in ticket_page
    assert "has no water" in ticket_page and "no answer" in ticket_page  # the text stays, the number goes

    client.post("/logout", data={"csrf": session_csrf(client)})
    login(client, tokens["agent"])
    assert SECRET in text(client.get("/desk/tickets/2026030200001"))  # the agent still sees it


def test_a_department_sees_an_open_callers_number_only_masked(client, desk, tokens):  # noqa: F811
    dispatched(desk, "2026030200001", OPEN_CALLER)
    login(client, tokens["dept:water"])
    page = text(client.get("/desk/inbox/2026030200001"))
    assert mask("+86" + OPEN_CALLER) == "+86138****8000"
    assert "+86138****8000" in page
    for form in _number_forms(OPEN_CALLER)[:6]:
        assert form not in page, form
    assert "请通过虚拟号码回拨市民" in page


# --- the board -------------------------------------------------------------------------------------------

def test_the_board_counts_down_urgent_tickets_and_ranks_late_departments(client, desk, tokens):  # noqa: F811
    dispatched(desk, "2026030200001", urgency="high")  # due in 30 minutes from now
    past = datetime.now(timezone.utc) - timedelta(hours=2)
    late = Casework(desk.session_factory, desk.casework.calendar, clock=lambda: past)
    queued(desk, "2026030200002", urgency="high", created_at=past - timedelta(minutes=5))
    version = late.apply("2026030200002", "register", AGENT, 1, REGISTER)
    late.apply("2026030200002", "dispatch", AGENT, version, MoveFields(lead="police"))
    assert [n.number for n in desk.casework.scan_deadlines()] == ["2026030200002"]
    dispatched(desk, "2026030200003")  # not urgent: no countdown

    login(client, tokens["supervisor"])
    page = text(client.get("/desk/board"))
    urgent = re.search(r'id="urgent".*?</section>', page, re.S).group(0)
    assert re.search(r'id="countdown-2026030200001"[^>]*>剩余 (29|28) 分钟<', urgent)
    assert re.search(r'class="countdown big late"[^>]*id="countdown-2026030200002"[^>]*>已超时 (89|90) 分钟<', urgent)
    assert urgent.index("2026030200002") < urgent.index("2026030200001")  # soonest deadline first
    assert "2026030200003" not in urgent
    overdue = re.search(r'id="overdue".*?</section>', page, re.S).group(0)
    assert "2026030200002" in overdue and "2026030200001" not in overdue
    ranking = re.search(r'id="ranking".*?</section>', page, re.S).group(0)
    assert "公安局" in ranking and "自来水公司" not in ranking
    english = text(client.get("/desk/board?lang=en"))
    assert re.search(r'>(29|28) min left<', english) and re.search(r'>(89|90) min overdue<', english)
    assert 'src="/desk/static/countdown.js"' in english


def test_the_boards_overdue_list_agrees_with_the_ranking(client, desk, tokens):  # noqa: F811
    past = datetime.now(timezone.utc) - timedelta(hours=2)
    late = Casework(desk.session_factory, desk.casework.calendar, clock=lambda: past)
    for number, lead in (("2026030200001", "water"), ("2026030200002", "police")):
        queued(desk, number, urgency="high", created_at=past - timedelta(minutes=5))
        version = late.apply(number, "register", AGENT, 1, REGISTER)
        late.apply(number, "dispatch", AGENT, version, MoveFields(lead=lead))
    desk.casework.scan_deadlines()
    police = Actor("police-desk", Role.department, "police")
    work(desk, "2026030200002", ("accept", MoveFields(), police), ("reply", MoveFields(note="late but done"), police))

    login(client, tokens["supervisor"])
    page = text(client.get("/desk/board"))
    overdue = re.search(r'id="overdue".*?</section>', page, re.S).group(0)
    assert "2026030200001" in overdue and "2026030200002" not in overdue  # replied: the hotline's to close
    ranking = desk.casework.overdue_ranking(datetime.now(timezone.utc) - timedelta(days=30))
    assert [(r.department, r.overdue_open) for r in ranking] == [("water", 1), ("police", 0)]


def test_an_empty_board_says_so(client, desk, tokens):  # noqa: F811
    login(client, tokens["supervisor"])
    page = text(client.get("/desk/board"))
    assert "目前没有等待签收的急件" in page and "目前没有超期未办结的工单" in page and "近 30 天没有超期工单" in page


# --- languages, headers, static files --------------------------------------------------------------------

def test_lang_switches_and_is_remembered_in_a_cookie(client, desk, tokens):  # noqa: F811
    dispatched(desk, "2026030200001")
    login(client, tokens["agent"])
    chinese = text(client.get("/desk/tickets/2026030200001"))
    assert '<html lang="zh-CN">' in chinese and "已派单" in chinese and "办理记录" in chinese
    switched = client.get("/desk/tickets/2026030200001?lang=en")
    assert '<html lang="en">' in text(switched) and "dispatched" in text(switched) and "History" in text(switched)
    cookie = client.get_cookie("lang")
    assert cookie.value == "en" and cookie.http_only and cookie.same_site == "Lax"
    assert "History" in text(client.get("/desk/tickets/2026030200001"))  # remembered
    listing = text(client.get("/desk/tickets?status=dispatched"))
    assert 'href="/desk/tickets?status=dispatched&amp;lang=zh-CN"' in listing  # the switch keeps the query
    assert "办理记录" in text(client.get("/desk/tickets/2026030200001?lang=zh-CN"))
    assert client.get_cookie("lang").value == "zh-CN"
    assert '<html lang="zh-CN">' in text(client.get("/desk/tickets?lang=fr"))


def test_pages_are_private_and_never_framed(client, desk, tokens):  # noqa: F811
    login(client, tokens["agent"])
    response = client.get("/desk/tickets")
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.mimetype == "text/html"


@pytest.mark.parametrize("name,mimetypes", [("desk.css", {"text/css"}),
                                            ("countdown.js", {"text/javascript", "application/javascript"})])
def test_static_files_come_from_the_blueprint(client, name, mimetypes):  # noqa: F811
    response = client.get(f"/desk/static/{name}")
    assert response.status_code == 200
    assert response.mimetype in mimetypes
    response.close()


def test_templates_and_static_files_ship_with_the_package():
    setup = (Path(pages.__file__).parent.parent / "setup.cfg").read_text(encoding="utf-8")
    assert re.search(r"^web = openapi.yaml, templates/\*.html, static/\*$", setup, re.M)
    assert sorted(p.name for p in (TEMPLATES.parent / "static").iterdir()) == [
        "agent.js", "countdown.js", "desk.css", "wallboard.js"]


def test_the_api_still_answers_json(client):  # noqa: F811
    assert client.get("/nowhere").is_json and client.get("/api/tickets").status_code == 401


def test_a_withheld_caller_reads_as_words(client, desk, tokens):  # noqa: F811
    queued(desk, "2026030200001", caller_raw="anonymous", caller_e164=None, caller_kind="withheld")
    work(desk, "2026030200001", ("register", REGISTER), ("dispatch", DISPATCH))
    login(client, tokens["agent"])
    page = text(client.get("/desk/tickets/2026030200001"))
    assert "<strong>未显示号码</strong>" in page and "来电号码未知，无法查找历史工单" in page
    client.post("/logout", data={"csrf": session_csrf(client)})
    login(client, tokens["dept:water"])
    assert "<strong>未显示号码</strong>" in text(client.get("/desk/inbox/2026030200001"))


def test_a_database_outage_is_a_503_page(client, desk, tokens, monkeypatch):  # noqa: F811
    from orders.errors import StorageUnavailable  # here: only this test needs it

    login(client, tokens["agent"])

    def down(*args, **kwargs):
        raise StorageUnavailable("the ticket database cannot be reached while searching tickets")

    monkeypatch.setattr(type(desk.tickets), "search", down)
    response = client.get("/desk/tickets")
    assert response.status_code == 503 and "工单数据库暂时无法访问" in text(response)


def test_a_crash_is_a_500_page_without_the_number(client, desk, tokens, monkeypatch, caplog):  # noqa: F811
    login(client, tokens["agent"])

    def crash(*args, **kwargs):
        raise RuntimeError(f"caller {SECRET} broke it")

    monkeypatch.setattr(type(desk.tickets), "search", crash)
    response = client.get("/desk/tickets?lang=en")
    assert response.status_code == 500 and "The server failed" in text(response)
    assert SECRET not in text(response) and SECRET not in caplog.text
    assert "unhandled RuntimeError on desk page /desk/tickets" in caplog.text
