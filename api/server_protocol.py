"""The HTTP/1.1 protocol `lco serve` gives uvicorn: its h11 protocol, except that a request
head over h11's buffer bound is answered 431 in OpenAI's error envelope, not h11's plain
"400 Invalid HTTP request received.".

Why a subclass: h11 refuses such a head itself (it stops buffering at
`h11_max_incomplete_event_size`, which is what keeps one 64 MB header from stalling the
loop), and uvicorn answers every refusal of h11 with the same plain 400. The head never
reaches the app, so `api.guards` cannot answer it. The cause is recognisable: h11 keeps what
it buffered, and only an over-long head leaves more than the bound there.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def head_too_large_body(bound: int) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": f"The request's headers are too large (the server reads at most "
                f"{bound} bytes of a request head).",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_header_fields_too_large",
            }
        }
    ).encode()


class BoundedHeadH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        # None: h11's own default bound, 16 KiB.
        bound = int(self.config.h11_max_incomplete_event_size or 16 * 1024)
        buffered, _ = self.conn.trailing_data
        if len(buffered) <= bound:
            super().send_400_response(msg)
            return
        body = head_too_large_body(bound)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(
                status_code=431, headers=headers, reason=b"Request Header Fields Too Large"
            ),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
