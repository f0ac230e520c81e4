"""The turn graph and the graph registry."""
