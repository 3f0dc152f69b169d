"""Fault-injection tests: the hotline's processes against throwaway PostgreSQL and Redis servers that the
tests hang, kill and restart while simulated calls stream in. See tests/faults/README.md."""
