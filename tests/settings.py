"""Test settings: local mode and a throwaway DATA_DIR (so the embedded Redis socket, the SQLite
test database and any media are private to this test session), then the real settings."""
import os
import tempfile

os.environ.setdefault("LOCAL_MODE", "1")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="transferapp-test-"))
# Every test signs up from 127.0.0.1 within one hour: the suite must not trip the per-address
# sign-up limit. Tests of that limit set their own (tests/test_security.py).
os.environ.setdefault("SIGNUP_RATE_LIMIT", "1000")

from transferapp.settings import *  # noqa: E402,F403
