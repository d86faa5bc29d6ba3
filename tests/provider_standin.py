#!/usr/bin/env python3
"""A stand-in model provider for tests/providers.rs: an external HTTP
server speaking the OpenAI-compatible chat-completions API (and Ollama's
/api/chat), on 127.0.0.1, port printed on the first line of stdout.

The first path segment picks the behaviour: /ok, /fail (500), /slow
(answers after SLOW_S seconds), /busy (the first request answers 429 with
Retry-After: 2, later ones succeed), /paced (like ok; used to measure the
client-side spacing). The caption is derived from the image it received:
the data URL (or Ollama's base64 image) is decoded, the PNG's first pixel
read, and its colour named ("a red square"), so a caption proves the
image really went over the wire. With STANDIN_KEY set, requests must carry
"Authorization: Bearer $STANDIN_KEY" (401 otherwise). GET /log answers
every request seen: [{"mode", "t", "caption" | "status"}].
"""

import base64
import json
import os
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_S = 3.0
KEY = os.environ.get("STANDIN_KEY")
LOCK = threading.Lock()
LOG = []
SEEN = {}

COLOURS = {
    (255, 0, 0): "red",
    (0, 255, 0): "green",
    (0, 0, 255): "blue",
    (255, 255, 0): "yellow",
    (255, 255, 255): "white",
    (0, 0, 0): "black",
}


def first_pixel(png):
    """The (r, g, b) of the top-left pixel of an 8-bit RGB/RGBA PNG: the
    first pixel of the first row is stored unpredicted whatever the row's
    filter (its left and upper neighbours count as zero)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            ihdr = data
        elif kind == b"IDAT":
            idat += data
        pos += 12 + n
    depth, colour = ihdr[8], ihdr[9]
    if depth != 8 or colour not in (2, 6):
        raise ValueError("only 8-bit RGB/RGBA PNGs")
    raw = zlib.decompress(idat)
    return tuple(raw[1:4])


def caption_for(png):
    rgb = first_pixel(png)
    return "a %s square" % COLOURS.get(rgb, "rgb(%d,%d,%d)" % rgb)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/log":
            with LOCK:
                self.answer(200, LOG)
        else:
            self.answer(404, {"error": "no such path"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        mode = self.path.strip("/").split("/")[0]
        now = time.time()
        entry = {"mode": mode, "t": now}
        with LOCK:
            SEEN[mode] = SEEN.get(mode, 0) + 1
            nth = SEEN[mode]
            LOG.append(entry)
        if KEY is not None and self.headers.get("Authorization") != "Bearer " + KEY:
            entry["status"] = 401
            return self.answer(401, {"error": {"message": "bad key"}})
        if mode == "fail":
            entry["status"] = 500
            return self.answer(500, {"error": {"message": "model exploded"}})
        if mode == "busy" and nth == 1:
            entry["status"] = 429
            return self.answer(429, {"error": {"message": "slow down"}}, [("Retry-After", "2")])
        if mode == "slow":
            time.sleep(SLOW_S)
        try:
            if self.path.endswith("/api/chat"):
                png = base64.b64decode(body["messages"][0]["images"][0])
            else:
                parts = body["messages"][0]["content"]
                url = [p for p in parts if p["type"] == "image_url"][0]["image_url"]["url"]
                head, b64 = url.split(",", 1)
                if not head.startswith("data:image/png;base64"):
                    raise ValueError("not a PNG data URL: " + head[:40])
                png = base64.b64decode(b64)
            text = caption_for(png)
        except Exception as e:  # a bad request is the client's bug: say so
            entry["status"] = 400
            return self.answer(400, {"error": {"message": "bad request: %s" % e}})
        entry["caption"] = text
        entry["status"] = 200
        if self.path.endswith("/api/chat"):
            return self.answer(200, {"model": body.get("model"), "done": True,
                                     "message": {"role": "assistant", "content": text}})
        return self.answer(200, {"id": "cmpl-%d" % nth, "object": "chat.completion",
                                 "model": body.get("model"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}]})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up (the /slow mode's timeouts) is expected.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def main():
    # STANDIN_HOST=0.0.0.0 serves containers too (docs/pipelines.md tries
    # the Compose walk-through against it); STANDIN_PORT picks the port.
    host = os.environ.get("STANDIN_HOST", "127.0.0.1")
    srv = Server((host, int(os.environ.get("STANDIN_PORT", "0"))), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
