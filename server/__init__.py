"""The Litestar application, workers and the command line."""
