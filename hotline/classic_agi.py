"""The ``incoming`` handler as a classic AGI script (stdin/stdout), for sites that cannot use FastAGI.

In the dialplan: ``AGI(/path/to/venv/bin/hotline-agi-incoming)`` (or ``python -m hotline.classic_agi``).
Settings come from HOTLINE_* variables / HOTLINE_CONFIG as for the other services. Asterisk starts
one process per call, so this is far slower than FastAGI (see bench/agi_calls.py).
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from asterisk.agi import AGIHangup

from agi_scripts.channel import ConnectionClosed, HotlineAGI, LineTransport, read_environment
from config import load_settings
from hotline.agi import build_incoming
from hotline.logs import configure_logging
from hotline.services import build_services


def main() -> int:
    # One process per call: a block of ticket numbers would leave all but one unused at every call.
    settings = dataclasses.replace(load_settings(), ticket_number_block=1)
    configure_logging(settings.log_level, settings.log_format)  # stderr: Asterisk logs it, stdout is AGI's
    transport = LineTransport(sys.stdin.buffer, sys.stdout.buffer)
    services = build_services(settings)
    try:
        env = read_environment(transport)
        build_incoming(services).handle(HotlineAGI(transport, env))
    except (ConnectionClosed, AGIHangup):
        pass
    except Exception:
        logging.getLogger("hotline.agi").exception("classic AGI script failed")
        return 1
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
