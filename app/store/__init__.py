"""Persistence: SQLModel tables, the async engine, and the queries that use them."""
