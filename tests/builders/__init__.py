"""Builders of test inputs shared by the whole test suite."""
