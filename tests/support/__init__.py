"""Shared helpers for integration tests: free ports, managed subprocesses, a real auth endpoint and real JS clients."""
