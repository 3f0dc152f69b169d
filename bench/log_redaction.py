"""Benchmark: what masking phone numbers in every log record (hotline.logs) costs per record.

Logs typical records through a logger whose handler formats them as JSON lines into memory, with the
standard record factory (the baseline, measured in the same run) and with the redacting one, in turns,
and prints nanoseconds per record (the fastest of the repeats: the least disturbed by other work on the
machine) for each kind of record and the difference.

    .venv/bin/python bench/log_redaction.py [--records 5000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hotline.logs import JsonFormatter, install_redaction, uninstall_redaction  # noqa: E402

SNAPSHOT = {"number": "2026112800042", "caller_e164": "+8613912348000", "uniqueid": "1714525200.17"}

#: name -> a function logging one record on ``log``
CASES = {
    "plain text": lambda log: log.info("FastAGI session ended"),
    "args, no number": lambda log: log.info("session %s ended after %d commands", "1714525200.17", 12),
    "args with a phone": lambda log: log.info("ticket %s for caller %s", "2026112800042", "+8613912348000"),
    "a logged dict": lambda log: log.info("deferred %s", SNAPSHOT),
    "extra= fields": lambda log: log.info("saved", extra={"ticket": "2026112800042", "caller": "+8613912348000"}),
}


def _per_record_ns(log: logging.Logger, emit, records: int, sink: io.StringIO) -> float:
    sink.seek(0)
    sink.truncate()
    started = time.perf_counter_ns()
    for _ in range(records):
        emit(log)
    return (time.perf_counter_ns() - started) / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000, help="records per timed loop")
    parser.add_argument("--repeats", type=int, default=15, help="timed loops per figure (the fastest is printed)")
    args = parser.parse_args()

    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("bench.log_redaction")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)

    quiet = logging.getLogger("bench.log_redaction.quiet")
    quiet.handlers[:] = [logging.NullHandler()]
    quiet.propagate = False
    quiet.setLevel(logging.INFO)

    for title, target in (("JSON-formatted into memory", log), ("record only (a NullHandler)", quiet)):
        print(f"ns per log record, {title} (fastest of {args.repeats} x {args.records} records)")
        print(f"  {'record':<20} {'baseline':>10} {'redacting':>10} {'added':>8}")
        for name, emit in CASES.items():
            baseline, redacting = [], []
            for _ in range(args.repeats):
                baseline.append(_per_record_ns(target, emit, args.records, sink))
                install_redaction()
                redacting.append(_per_record_ns(target, emit, args.records, sink))
                uninstall_redaction()
            low, high = min(baseline), min(redacting)
            print(f"  {name:<20} {low:>10.0f} {high:>10.0f} {high - low:>+8.0f}")


if __name__ == "__main__":
    main()
