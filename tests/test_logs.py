"""hotline/logs.py: JSON or text lines, and phone numbers masked in every record, whoever logs it."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from rq import Queue, SimpleWorker
from sqlalchemy import create_engine, text

from hotline import logs
from hotline.logs import configure_logging, redact
from orders.ticket_numbers import is_ticket_number

PHONE = "13912348000"
E164 = "+86" + PHONE
TICKET = "2024050100001"
FALLBACK_TICKET = "202405019000001"
UNIQUEID = "1714525200.1234567"  # the fraction alone is 7 digits


def _leaks(output: str) -> list[str]:
    """Pieces of PHONE (5 digits or more) found in ``output``."""
    return [PHONE[i:i + 5] for i in range(len(PHONE) - 4) if PHONE[i:i + 5] in output]


@pytest.fixture
def stream():
    """configure_logging into a buffer; the root logger and the record factory are put back afterwards."""
    root = logging.getLogger()
    handlers, level, factory = root.handlers[:], root.level, logging.getLogRecordFactory()
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    yield buffer
    logs.uninstall_redaction()
    logging.setLogRecordFactory(factory)
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


# --- what redact() masks and keeps ----------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    PHONE, E164, "+86 139 1234 8000", "139-1234-8000", "0" + PHONE, "86" + PHONE, "tel:" + PHONE, "caller" + PHONE,
    f"SIP/{PHONE}-0000002a", "0898-66668888", "66668888", "1234567",
])
def test_phone_numbers_are_masked(raw):
    masked = redact(f"call from {raw} at 2024-05-01 09:00")
    assert not _leaks(masked)
    assert "66668888" not in masked and "1234567" not in masked
    assert masked.endswith(" at 2024-05-01 09:00")


def test_masking_keeps_the_country_code_and_the_last_digits():
    assert redact(E164) == "+86*******8000"
    assert redact(f"from {PHONE}.") == "from *******8000."
    assert redact("1234567") == "*****67"


@pytest.mark.parametrize("kept", [
    TICKET, FALLBACK_TICKET, "202405018000001", UNIQUEID, "1714525200.1", "123456", "2024-05-01T01:00:00+08:00",
    f"tickets {TICKET} {FALLBACK_TICKET}", f"ticket {TICKET} call {UNIQUEID}", f"{TICKET} {UNIQUEID}",
    "192.168.100.200:5432",
])
def test_ticket_numbers_uniqueids_and_dates_survive(kept):
    assert redact(kept) == kept


def test_a_number_next_to_a_ticket_is_masked_and_the_ticket_kept():
    assert redact(f"{TICKET} 139 1234 8000") == f"{TICKET} *******8000"
    assert redact(f"{PHONE} {TICKET}") == f"*******8000 {TICKET}"


@pytest.mark.parametrize("number", [TICKET, FALLBACK_TICKET, "20240501000001", "202405018000001"])
def test_kept_ticket_numbers_are_what_orders_calls_ticket_numbers(number):
    assert is_ticket_number(number) and redact(number) == number


@pytest.mark.parametrize("number", ["20241301000001", "2024050112", "3024050100001"])
def test_ticket_lookalikes_are_masked(number):
    assert not is_ticket_number(number) and redact(number) != number


# --- every record, whoever writes it --------------------------------------------------------------------

def test_message_args_and_a_logged_dict_are_masked(stream):
    log = logging.getLogger("test.logs")
    snapshot = {"number": TICKET, "caller_e164": E164, "uniqueid": UNIQUEID}
    log.info("saving %s", snapshot)
    log.info(snapshot)
    log.warning("caller %(caller)s", {"caller": PHONE})
    lines = _lines(stream)
    assert len(lines) == 3
    out = stream.getvalue()
    assert not _leaks(out)
    assert TICKET in lines[0]["msg"] and UNIQUEID in lines[0]["msg"] and "+86*******8000" in lines[0]["msg"]


def test_extra_fields_are_masked_even_for_handlers_that_are_not_ours(stream):
    # A handler of a library's own, on a child logger: it sees the record before the root's handler does.
    own = io.StringIO()
    handler = logging.StreamHandler(own)
    handler.setFormatter(logging.Formatter("%(message)s|%(caller)s|%(snapshot)s|%(ticket)s"))
    log = logging.getLogger("test.logs.extra")
    log.addHandler(handler)
    try:
        log.info("call", extra={"caller": E164, "snapshot": {"caller_e164": E164, "calls": [PHONE]},
                                "ticket": TICKET, "attempt": 12345678})
    finally:
        log.removeHandler(handler)
    assert not _leaks(own.getvalue()) and not _leaks(stream.getvalue())
    line = _lines(stream)[0]
    assert line["caller"] == "+86*******8000"
    assert line["snapshot"] == {"caller_e164": "+86*******8000", "calls": ["*******8000"]}
    assert line["ticket"] == TICKET and line["attempt"] == 12345678  # numbers that are not text stay as they are


def test_exception_text_and_stack_are_masked(stream):
    log = logging.getLogger("test.logs.exc")
    try:
        raise ValueError(f"duplicate caller {E164} on ticket {TICKET}")
    except ValueError:
        log.exception("save failed")
    _log_with_a_number_in_the_source(log)
    out = stream.getvalue()
    assert not _leaks(out)
    first, second = _lines(stream)
    assert "ValueError: duplicate caller +86*******8000 on ticket " + TICKET in first["exc"]
    assert "_log_with_a_number_in_the_source" in second["stack"] and "*******8000" in second["stack"]


def _log_with_a_number_in_the_source(log):
    log.warning("here", stack_info=True) if "13912348000" else None  # the stack shows this source line


def test_text_format_masks_exceptions_too():
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers, level, factory = root.handlers[:], root.level, logging.getLogRecordFactory()
    try:
        configure_logging("INFO", "text", stream=buffer)
        try:
            raise KeyError(PHONE)
        except KeyError:
            logging.getLogger("test.logs.text").error("lookup of %s failed", PHONE, exc_info=True)
    finally:
        logs.uninstall_redaction()
        logging.setLogRecordFactory(factory)
        root.handlers[:] = handlers
        root.setLevel(level)
    out = buffer.getvalue()
    assert "lookup of *******8000 failed" in out and "KeyError: '*******8000'" in out
    assert not _leaks(out)


def test_sqlalchemy_echoing_its_parameters_is_masked(stream):
    engine = create_engine("sqlite://", hide_parameters=False)
    sa_log = logging.getLogger("sqlalchemy.engine")
    level = sa_log.level
    sa_log.setLevel(logging.INFO)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT :caller, :ticket"), {"caller": E164, "ticket": TICKET})
    finally:
        sa_log.setLevel(level)
        engine.dispose()
    out = stream.getvalue()
    assert "SELECT ?, ?" in out and "+86*******8000" in out and TICKET in out
    assert not _leaks(out)


def _failing_job(snapshot):
    raise ValueError(f"cannot save ticket {snapshot['number']} of caller {snapshot['caller_e164']}")


def test_rq_logging_a_jobs_arguments_and_failure_is_masked(stream, redis_conn):
    queue = Queue("test-logs-" + uuid.uuid4().hex[:8], connection=redis_conn)
    try:
        queue.enqueue(_failing_job, {"number": TICKET, "caller_e164": E164})
        SimpleWorker([queue], connection=redis_conn).work(burst=True)
    finally:
        queue.delete(delete_jobs=True)
    out = stream.getvalue()
    rq_lines = [line for line in _lines(stream) if line["logger"].startswith("rq.")]
    assert any(TICKET in line["msg"] and "+86*******8000" in line["msg"] for line in rq_lines)  # the description
    assert any("ValueError: cannot save ticket" in line.get("exc", "") + line["msg"] for line in rq_lines)
    assert not _leaks(out)


def test_a_bad_format_string_does_not_raise_and_is_masked(stream):
    logging.getLogger("test.logs.bad").info("%d calls from %s", "many")
    assert "%d calls from %s" in _lines(stream)[0]["msg"]
    logging.getLogger("test.logs.bad").info("%s then %d", PHONE, "x")
    assert not _leaks(stream.getvalue())


def test_records_rebuilt_from_a_dict_are_masked(stream):
    record = logging.makeLogRecord({"msg": f"from {PHONE}", "caller": E164})
    assert record.getMessage() == "from *******8000" and record.caller == "+86*******8000"


def test_configuring_twice_installs_the_factory_once(stream):
    configure_logging("DEBUG", "json", stream=stream)
    assert logging.getLogRecordFactory() is logs._redacting_factory
    assert logs._base_factory is not logs._redacting_factory
    logging.getLogger("test.logs.twice").info("one line from %s", PHONE)
    assert [line["msg"] for line in _lines(stream)] == ["one line from *******8000"]


# --- the format -----------------------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("buffer,is_json", [(_Terminal(), False), (io.StringIO(), True)])
def test_auto_format_is_text_on_a_terminal_and_json_otherwise(buffer, is_json):
    root = logging.getLogger()
    handlers, level, factory = root.handlers[:], root.level, logging.getLogRecordFactory()
    try:
        configure_logging("INFO", "auto", stream=buffer)
        logging.getLogger("test.logs.auto").info("hello")
    finally:
        logs.uninstall_redaction()
        logging.setLogRecordFactory(factory)
        root.handlers[:] = handlers
        root.setLevel(level)
    line = buffer.getvalue().strip()
    if is_json:
        assert json.loads(line)["msg"] == "hello"
    else:
        assert line.endswith("INFO test.logs.auto: hello")


def test_objects_in_extra_are_written_masked(stream):
    class Snapshot:
        def __str__(self) -> str:
            return f"Snapshot(caller={E164})"

    logging.getLogger("test.logs.obj").info("saved", extra={"snapshot": Snapshot()})
    assert _lines(stream)[0]["snapshot"] == "Snapshot(caller=+86*******8000)"


def test_a_value_that_cannot_be_masked_is_withheld_not_raised(stream):
    looped: dict = {"caller": E164}
    looped["self"] = looped
    logging.getLogger("test.logs.loop").info("looped", extra={"snapshot": looped, "ticket": TICKET})
    line = _lines(stream)[0]
    assert line["snapshot"] == "(withheld: could not be masked)" and line["ticket"] == TICKET


def test_a_day_as_ticket_numbering_writes_it_is_kept_but_a_local_number_is_not():
    from hotline.logs import redact

    assert redact("ticket numbers: counter for 20261129 seeded at 0") == "ticket numbers: counter for 20261129 seeded at 0"
    assert "66668888" not in redact("caller 66668888")
    assert "20261399" not in redact("caller 20261399")  # month 13: not a day
