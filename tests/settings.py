"""Test settings: local mode and a throwaway DATA_DIR (so the embedded Redis socket, the SQLite
test database and any media are private to this test session), then the real settings."""
import os
import tempfile

os.environ.setdefault("LOCAL_MODE", "1")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="transferapp-test-"))

from transferapp.settings import *  # noqa: E402,F403
