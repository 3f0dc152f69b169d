"""The RQ driver: background jobs, each translating a queued payload into domain calls."""
