"""PostgreSQL storage: the embedded server, migrations, the connection pool and repositories."""
