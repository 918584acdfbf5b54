"""Data model, engine, migrations and repository functions (SQLite or Postgres)."""
