"""Fixtures of the scale-out tests: the shared PostgreSQL 15 from tests/pg.py."""

from tests.pg import postgres_server

__all__ = ["postgres_server"]
