"""A real HTTP server that receives webhooks in a thread: it checks each signature with the
tenant's secret and can be told to fail its first N requests."""

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from app.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass
class Received:
    event: str
    delivery: str
    body: bytes
    signature_valid: bool


@dataclass
class Receiver:
    secret: str = ""
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def accepted(self) -> list[Received]:
        with self.lock:
            return list(self.received)


def start_receiver(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.requests += 1
                failing = receiver.requests <= receiver.fail_first
                if not failing:
                    receiver.received.append(Received(
                        event=self.headers[EVENT_HEADER],
                        delivery=self.headers[DELIVERY_HEADER],
                        body=body,
                        signature_valid=verify(receiver.secret, self.headers[TIMESTAMP_HEADER], body,
                                               self.headers[SIGNATURE_HEADER]),
                    ))
            self.send_response(500 if failing else 204)
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
