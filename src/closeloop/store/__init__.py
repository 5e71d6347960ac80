"""SQL store (SQLAlchemy Core): SQLite embedded, PostgreSQL for scale-out."""
