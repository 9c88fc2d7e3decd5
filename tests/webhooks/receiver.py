"""A real HTTP server on 127.0.0.1 that receives webhook deliveries in the test process."""
import http.server
import threading
import time
from dataclasses import dataclass


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    at: float


class Receiver:
    """Answers each POST with the next code of `answers` (the last one repeats), records what came."""

    def __init__(self, answers=(200,), redirect_to: str = ""):
        self.answers, self.redirect_to = list(answers), redirect_to
        self.received: list[Received] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
                code = receiver.answers[min(len(receiver.received), len(receiver.answers)) - 1]
                self.send_response(code)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/transferapp?source=test"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.received) >= count, f"{len(self.received)} of {count} deliveries arrived"
        return self.received
