"""Puts ``tests/`` on ``sys.path`` (pytest's default import mode), so test files share
``op_helpers``."""
