"""A local HTTP server for the image-URL tests: routes with good images, slow answers, errors and oversized bodies,
served on 127.0.0.1 from a thread for the length of a `with` block."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import urlsplit

from PIL import Image

from .corpus_fixtures import IMAGE_BYTES, encode
from .pipeline_fixtures import striped_image

SHORT_TIMEOUT = 1.0  # seconds: what the failing downloads are given
SLOW_SECONDS = 6.0  # the slow routes would take this long, far past SHORT_TIMEOUT
GIVE_UP_SECONDS = 3 * SHORT_TIMEOUT  # a failed download must have returned by then
SMALL_LIMIT = 1000  # bytes: max_bytes for the oversized bodies
REQUEST_SECONDS = 5  # the server drops a client that sends nothing for this long


class Route(NamedTuple):
    """One answer of the test server."""

    body: bytes
    status: int = 200
    content_type: str = "image/png"
    delay: float = 0.0  # seconds before the answer starts
    declare_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    drip_seconds: float = 0.0  # > 0: the body goes out a byte at a time, this long apart
    location: str | None = None  # a Location header (with a 3xx status: a redirect)


def png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


GOOD_PNG = png(striped_image())
ROUTES = {
    "/good.png": Route(GOOD_PNG),
    "/photo.png": Route(GOOD_PNG),
    "/alpha.png": Route(IMAGE_BYTES["png_alpha"]()),
    "/rotated.jpg": Route(IMAGE_BYTES["exif_rotated"](), content_type="image/jpeg"),
    "/slow.png": Route(GOOD_PNG, delay=SLOW_SECONDS),
    "/drip.png": Route(GOOD_PNG, drip_seconds=0.2),  # every read is quick, the whole is not
    "/gone.png": Route(b"no such picture", status=404, content_type="text/plain"),
    "/broken.png": Route(b"server trouble", status=500, content_type="text/plain"),
    "/huge.png": Route(b"\x89PNG" + bytes(5 * SMALL_LIMIT)),
    "/huge-unannounced.png": Route(b"\x89PNG" + bytes(5 * SMALL_LIMIT), declare_length=False),
    "/page.html": Route(b"<html><body>log in to see this picture</body></html>", content_type="text/html"),
    "/empty.png": Route(b""),
    "/bomb.png": Route(IMAGE_BYTES["bomb_png"]()),
}


@contextmanager
def image_server(routes: dict[str, Route] = ROUTES, hits: list[str] | None = None) -> Iterator[str]:
    """Serve `routes` (by path) on 127.0.0.1 at a free port from a thread; yields the base URL. Unknown paths get
    404; `hits`, if given, gets the path of every request. Leaving the block wakes every delayed answer, stops the
    server and joins its thread."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_SECONDS

        def do_GET(self):
            if hits is not None:
                hits.append(self.path)
            route = routes.get(urlsplit(self.path).path)
            if route is None:
                self.send_error(404)
                return
            if stop.wait(route.delay):
                return  # the test is over
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            if route.location is not None:
                self.send_header("Location", route.location)
            if route.declare_length:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            try:
                if route.drip_seconds:
                    for byte in route.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if stop.wait(route.drip_seconds):
                            return
                else:
                    self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should on these routes

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(REQUEST_SECONDS)
