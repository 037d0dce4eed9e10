"""schemashift: safe PostgreSQL schema changes driven by SQLAlchemy models."""

__version__ = "0.1.0"
