"""Repository-level conftest: pytest-ipw itself is active through its pytest11 entry point."""
