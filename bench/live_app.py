"""Shared by the benchmarks that drive the whole app over HTTP, as a user would: start
`manage.py serve` (web, workers, embedded Redis, SQLite) on a free port of 127.0.0.1 with a
throwaway DATA_DIR, and a small cookie-keeping client that signs up, logs in and posts forms
with Django's real CSRF flow (GET a page, read the csrftoken cookie, POST with X-CSRFToken and
Referer). Standard library only, so the benchmarks need nothing beyond the app's own install.
"""
import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(data_dir, **extra) -> dict:
    """Local mode on a private DATA_DIR: SQLite and the embedded Redis, never a shared server."""
    env = {**os.environ, "LOCAL_MODE": "1", "DATA_DIR": str(data_dir), **extra}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    return env


def manage(env, *command):
    subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


class Server:
    """`manage.py serve` in its own process group, stopped (children included) on exit."""

    def __init__(self, env, *, port: int | None = None, workers: int | None = None, log_path=None):
        self.env, self.port = env, port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.command = command + (["--workers", str(workers)] if workers else [])
        self.log_path = log_path
        self.process = None

    def __enter__(self):
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`manage.py serve` exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the app did not answer on {self.base} within {timeout_s:.0f} s")

    def __exit__(self, *exc_info):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # serve stops its workers and web server
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the caller sees the 302 itself and checks where it points


class Client:
    """One browser: its own cookies (session, CSRF), no automatic redirects."""

    def __init__(self, base: str, timeout_s: float = 60):
        self.base, self.timeout_s = base, timeout_s
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def request(self, method, path, body=None, headers=None) -> Response:
        """A response for every HTTP status; connection problems raise OSError."""
        url = path if path.startswith("http") else self.base + path
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=self.timeout_s) as response:
                return Response(response.status, response.read(), {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})

    def get(self, path, headers=None) -> Response:
        return self.request("GET", path, headers=headers)

    def csrf_token(self) -> str:
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def post(self, path, fields=None, files=None, headers=None) -> Response:
        """A form POST carrying the CSRF token Django set as a cookie on an earlier GET."""
        if files:
            body, content_type = _multipart(fields or {}, files)
        else:
            body, content_type = urllib.parse.urlencode(fields or {}, doseq=True).encode(), "application/x-www-form-urlencoded"
        headers = {"Content-Type": content_type, "X-CSRFToken": self.csrf_token(), "Referer": self.base + path, **(headers or {})}
        return self.request("POST", path, body=body, headers=headers)

    def sign_up(self, username, password) -> Response:
        self.get("/accounts/signup/")  # sets the csrftoken cookie
        return self.post("/accounts/signup/", {"username": username, "password1": password, "password2": password})

    def log_in(self, username, password) -> Response:
        self.get("/accounts/login/")
        return self.post("/accounts/login/", {"username": username, "password": password})


def _multipart(fields: dict, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """fields, and files as (field name, file name, bytes)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def run_status(page: str) -> str:
    """The status badge of a run page, lower case ("queued", "running", "succeeded", ...)."""
    match = re.search(r'id="run-status"[^>]*>([^<]+)<', page)
    return match.group(1).strip().lower() if match else "unknown"
