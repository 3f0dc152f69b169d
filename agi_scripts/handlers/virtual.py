"""``agi://host/virtual``: a call to a virtual number, put through without either side learning the
other's real number (asterisk/extensions.conf, [hotline-virtual]).

Three legs of one call, told apart by the request's query string:

* ``virtual`` (the caller's leg): resolves (caller number, dialled virtual number [, extension keyed in])
  through the broker -- never the dialled number alone. Sets ``VIRTUAL_CALL`` (an opaque call id),
  ``VIRTUAL_CALLERID`` (the virtual number, shown to the callee) and ``VIRTUAL_RECORD``; or
  ``VIRTUAL_REFUSED`` (why), on which the dialplan plays "not in service" and hangs up. A virtual number
  in extension mode asks for the extension first. No real number is ever sent on this leg.
* ``virtual?leg=out`` (the Local channel the dialplan dials, ``Local/<call id>@hotline-virtual-out``):
  sets ``VIRTUAL_TARGET``, the real number to dial, on that outgoing leg only.
* ``virtual?leg=end`` (the caller's leg's ``h`` extension): completes the call's receipt (answered,
  ended, who hung up).

Anything unexpected (a storage error, a malformed request) sets nothing: the dialplan then says the call
cannot be put through, never connects to a guess.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

from agi_scripts import variables
from agi_scripts.channel import HotlineAGI
from virtual_numbers.views import ENTER_EXTENSION, EXTENSION_REQUIRED

log = logging.getLogger(__name__)

_EXTENSION = re.compile(r"[0-9]{1,8}")
_CALL_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")


@dataclass
class VirtualCall:
    """The ``virtual`` handler over a virtual_numbers.broker.Broker."""

    broker: object
    extension_timeout_ms: int = 8000
    extension_digits: int = 8

    def handle(self, agi: HotlineAGI) -> None:
        leg = (parse_qs(agi.environment.query).get("leg") or ["in"])[0]
        if leg == "out":
            self._outgoing(agi)
        elif leg == "end":
            self._ended(agi)
        else:
            self._incoming(agi)

    def _incoming(self, agi: HotlineAGI) -> None:
        env = agi.environment
        caller = env.get("agi_callerid")
        dialled = env.get("agi_extension") or env.get("agi_dnid")
        call_id = env.get("agi_uniqueid")
        if not _CALL_ID.fullmatch(call_id or ""):
            log.warning("virtual number call without a usable uniqueid; not put through",
                        extra={"event": "virtual.bad_request"})
            return
        resolution = self.broker.resolve(caller, dialled, None, call_id)
        if resolution.refused and resolution.reason == EXTENSION_REQUIRED:
            keyed = agi.get_digits(f"hotline/{resolution.announcement or ENTER_EXTENSION}",
                                   self.extension_timeout_ms, self.extension_digits)
            resolution = self.broker.resolve(caller, dialled, keyed if _EXTENSION.fullmatch(keyed or "") else "x",
                                             call_id)  # "x": nothing usable keyed, refused as unknown
        if resolution.refused:
            agi.set_variable(variables.VIRTUAL_REFUSED, resolution.reason or "refused")
            return
        agi.set_variable(variables.VIRTUAL_CALLERID, resolution.caller_id)
        agi.set_variable(variables.VIRTUAL_RECORD, "1" if resolution.record else "0")
        agi.set_variable(variables.VIRTUAL_CALL, call_id)  # last: the dialplan's sign that all is set

    def _outgoing(self, agi: HotlineAGI) -> None:
        call_id = agi.environment.get("agi_extension")
        if not _CALL_ID.fullmatch(call_id or ""):
            return
        target = self.broker.dial_target(call_id)
        if target is not None:
            agi.set_variable(variables.VIRTUAL_TARGET, target)

    def _ended(self, agi: HotlineAGI) -> None:
        call_id = agi.get_variable(variables.VIRTUAL_CALL)
        if not _CALL_ID.fullmatch(call_id or ""):
            return
        now = datetime.now(timezone.utc)
        answered = _seconds(agi.get_variable("ANSWEREDTIME"))  # Dial's: seconds the callee was on the line
        source = agi.get_variable("CHANNEL(hangupsource)")  # the channel that hung up first
        hangup_by = "caller" if source == agi.environment.get("agi_channel") else "callee" if source else None
        self.broker.record_call(call_id, answered_at=now - timedelta(seconds=answered) if answered else None,
                                ended_at=now, hangup_by=hangup_by)


def _seconds(raw: str | None) -> float:
    try:
        return max(0.0, float(raw or 0))
    except ValueError:
        return 0.0
