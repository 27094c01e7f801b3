"""The content store: SQLAlchemy 2.0 tables, migrations and the queries the rest of the service makes."""
