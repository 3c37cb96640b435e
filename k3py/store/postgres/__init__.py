"""The PostgreSQL backend: several k3py servers sharing one database."""

from k3py.store.postgres.backend import PostgresStore

__all__ = ["PostgresStore"]
