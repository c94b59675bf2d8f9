"""The one URL policy: which image URLs the project fetches, and the fetch itself.

Every download of the project (the image processor, the pipeline, `acn-predict`, `acn-explain`, the Space app) goes
through `fetch_url`. A URL given by a stranger must not turn the host into a scanner of its own network, so:

- only `http` and `https`, no proxy, at most `MAX_REDIRECTS` redirects, each hop checked like the first;
- the host is resolved once and the connection is made to that checked address (no second lookup that a DNS
  answer could change in between); every address it resolves to must be public: loopback, private, link-local,
  shared (carrier NAT), multicast, reserved and unspecified addresses are refused, in any spelling (`127.1`,
  `2130706433`, `0x7f000001`, `0`, `[::1]`) and inside IPv6 forms that carry an IPv4 address (IPv4-mapped,
  6to4, NAT64, Teredo);
- every refusal and every failure (no connection, an HTTP error status, a bad response) raises `UrlFetchError`
  with one message, `UNAVAILABLE`, so that the error does not tell what the address held;
- each socket operation waits at most until the deadline, and `FetchHandle.close` (called by a caller that has
  given up) closes the connection, so that no download outlives its timeout.

`allow_private_urls=True` lifts the address check, for a user's own network; the Space app never sets it.
"""

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse

ALLOWED_SCHEMES = ("http", "https")
MAX_REDIRECTS = 5  # browsers allow about 20; an image host needs one or two
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
CHUNK_BYTES = 2**16
# one message for every refusal or failure: which one it was (refused, closed port, 404, a page) stays unsaid
UNAVAILABLE = (
    "no image could be downloaded from this URL (only public http(s) addresses are fetched; "
    "allow_private_urls=True lifts that for your own network)"
)
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address


class UrlFetchError(ValueError):
    """A URL that gave no body. `kind` is "unavailable", "timed out", "too large" or "empty"; the message is
    `UNAVAILABLE` for every "unavailable" URL."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` reaches the public internet: not loopback, private, link-local, shared, multicast, reserved
    or unspecified, and, for IPv6 forms that embed an IPv4 address, neither is the embedded one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo is not None:
            embedded.extend(address.teredo)  # (server, client)
        if address in NAT64_PREFIX:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and not is_public_address(inner) for inner in embedded):
            return False
        if address.ipv4_mapped is not None:
            return True  # the IPv4 address decided; the ::ffff:0:0/96 block itself counts as reserved
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url(url: str, allow_private_urls: bool = False) -> tuple[urllib.parse.SplitResult, list[str]]:
    """The URL's parts and the checked addresses its host resolves to (resolved once, here), or `UrlFetchError`."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        raise UrlFetchError("unavailable", UNAVAILABLE) from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        raise UrlFetchError("unavailable", UNAVAILABLE)
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise UrlFetchError("unavailable", UNAVAILABLE) from None
    addresses = []
    for *_, sockaddr in found:
        host = str(sockaddr[0])  # an IPv4 or IPv6 address: the family is AF_INET or AF_INET6 for a TCP host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise UrlFetchError("unavailable", UNAVAILABLE) from None
        if not allow_private_urls and not is_public_address(address):
            raise UrlFetchError("unavailable", UNAVAILABLE)  # one private answer refuses the host: DNS picks
        addresses.append(host)
    if not addresses:
        raise UrlFetchError("unavailable", UNAVAILABLE)
    return parts, addresses


class FetchHandle:
    """The connection of one download in progress, so that a caller that stops waiting can close it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.closed = False

    def _attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            if self.closed:
                _shut(sock)

    def close(self) -> None:
        """Shut the connection now: a socket operation of the download fails at once and its thread ends."""
        with self._lock:
            self.closed = True
            if self._socket is not None:
                _shut(self._socket)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread, unlike close()
    except OSError:
        pass  # not connected (any more)


def fetch_url(
    url: str,
    timeout: float,
    max_bytes: int,
    allow_private_urls: bool = False,
    handle: FetchHandle | None = None,
) -> tuple[bytes, str | None]:
    """The body of a GET of `url` under the policy above, and its Content-Type; `UrlFetchError` otherwise.

    Every socket operation waits at most until `timeout` seconds from now; a body over `max_bytes` bytes is
    refused ("too large") as soon as its length is known or reached.
    """
    deadline = time.monotonic() + timeout
    handle = handle or FetchHandle()
    for _ in range(MAX_REDIRECTS + 1):
        parts, addresses = check_url(url, allow_private_urls)
        connection = sock = response = None
        try:
            connection = _pinned_connection(parts, addresses, _remaining(deadline))
            connection.connect()
            sock = connection.sock  # the response keeps reading it after the connection lets go of it
            handle._attach(sock)
            response = _request(connection, sock, parts, deadline)
            if response.status in REDIRECT_STATUSES and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise UrlFetchError("unavailable", UNAVAILABLE)
            return _read_body(sock, response, max_bytes, deadline), response.headers.get_content_type()
        except UrlFetchError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as error:
            if handle.closed or isinstance(error, TimeoutError) or time.monotonic() >= deadline:
                raise UrlFetchError("timed out", f"took more than {timeout:g} s") from None
            raise UrlFetchError("unavailable", UNAVAILABLE) from None
        finally:
            for opened in (response, connection, sock):  # the socket closes once the response's file lets go too
                if opened is not None:
                    opened.close()
    raise UrlFetchError("unavailable", UNAVAILABLE)  # too many redirects


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _pinned_connection(
    parts: urllib.parse.SplitResult, addresses: list[str], timeout: float
) -> http.client.HTTPConnection:
    """A connection that sends `parts.hostname` (Host header, TLS name and certificate check) but connects to the
    checked `addresses` (the first that answers), never looking the name up again."""
    assert parts.hostname is not None  # check_url refuses a URL without a host
    host = parts.hostname.encode("idna").decode("ascii")
    connection: http.client.HTTPConnection
    if parts.scheme.lower() == "https":
        connection = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)

    def connect_to_checked_address(
        host_and_port: tuple[str, int], timeout: float, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        for address in addresses[:-1]:
            try:
                return socket.create_connection((address, host_and_port[1]), timeout, source_address)
            except OSError:
                pass
        return socket.create_connection((addresses[-1], host_and_port[1]), timeout, source_address)

    # what HTTP(S)Connection.connect calls; a private attribute that typeshed leaves out
    connection._create_connection = connect_to_checked_address  # type: ignore[attr-defined]  # not in the stubs
    return connection


def _request(
    connection: http.client.HTTPConnection,
    sock: socket.socket,
    parts: urllib.parse.SplitResult,
    deadline: float,
) -> http.client.HTTPResponse:
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    connection.request("GET", path, headers={"Accept": "image/*", "User-Agent": "acn-mner"})
    sock.settimeout(_remaining(deadline))
    return connection.getresponse()


def _read_body(sock: socket.socket, response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise UrlFetchError("too large", f"{declared} bytes exceed max_download_bytes={max_bytes}")
    chunks, size = [], 0
    while True:
        sock.settimeout(_remaining(deadline))  # a byte every few seconds still ends at the deadline
        chunk = response.read1(CHUNK_BYTES)  # what one recv brings, not CHUNK_BYTES waited for
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise UrlFetchError("too large", f"more than max_download_bytes={max_bytes} bytes")
        chunks.append(chunk)
    if not chunks:
        raise UrlFetchError("empty", "empty response body")
    return b"".join(chunks)


__all__ = [
    "ALLOWED_SCHEMES",
    "MAX_REDIRECTS",
    "UNAVAILABLE",
    "FetchHandle",
    "UrlFetchError",
    "check_url",
    "fetch_url",
    "is_public_address",
]
