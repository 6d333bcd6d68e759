"""End-to-end tier. The service fixtures live in tests/conftest.py: the browser tier
shares the same session stack."""
