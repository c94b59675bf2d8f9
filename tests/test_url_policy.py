"""The URL policy (modeling_acn/url_policy_acn.py) on every path that fetches: loopback, private, link-local and
metadata addresses refused in every spelling before any connection, on every redirect hop, with one message that
does not tell what was there; the host looked up once per hop and the connection made to the checked address;
a download that ends at its deadline, its connection closed.

No test sends a packet off this machine: `socket.create_connection` is replaced by a guard that lets loopback
through, maps the "public" addresses of a fake DNS table onto servers on 127.0.0.1, and refuses (and records)
anything else.
"""

import ipaddress
import json
import re
import socket
import threading
import time

import pytest

from acn_mner import explain, predict
from modeling_acn.image_processing_acn import AcnImageError, AcnImageProcessor, load_image_url
from modeling_acn.url_policy_acn import MAX_REDIRECTS, UNAVAILABLE, is_public_address
from tests.http_fixtures import GOOD_PNG, Route, image_server
from tests.pipeline_fixtures import TWEET, tiny_pipeline

PUBLIC_ADDRESSES = {"images.example": "93.184.216.34", "cdn.example": "93.184.216.35"}  # the fake DNS table
METADATA_AND_PRIVATE = [
    "169.254.169.254",
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "100.64.0.1",
    "[fe80::1]",
    "[fc00::1]",
    "224.0.0.1",
]


class Network:
    """Records every connection attempt; loopback goes through, the fake public addresses go to their local server,
    anything else is refused without a packet."""

    def __init__(self, monkeypatch):
        self.attempts: list[tuple[str, int]] = []
        self.lookups: list[str] = []
        self.servers: dict[str, int] = {}  # fake public address -> port of its local server
        self.answers: dict[str, list[list[str]]] = {}  # host -> successive getaddrinfo answers
        real_connect, real_lookup = socket.create_connection, socket.getaddrinfo

        def connect(address, timeout=None, source_address=None, **kwargs):
            host, port = address[0], address[1]
            self.attempts.append((host, port))
            if host in self.servers:
                return real_connect(("127.0.0.1", self.servers[host]), timeout)
            if host in ("127.0.0.1", "localhost"):
                return real_connect(address, timeout)
            raise ConnectionRefusedError(f"the test network reaches no {host}")

        def lookup(host, port, *args, **kwargs):
            self.lookups.append(host)
            if host in self.answers:
                queue = self.answers[host]
                found = queue.pop(0) if len(queue) > 1 else queue[0]
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in found]
            if host in PUBLIC_ADDRESSES:
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESSES[host], port))]
            return real_lookup(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "create_connection", connect)
        monkeypatch.setattr(socket, "getaddrinfo", lookup)

    def public(self, address: str, port: int) -> None:
        self.servers[address] = port

    def off_machine_attempts(self) -> list[tuple[str, int]]:
        return [
            attempt
            for attempt in self.attempts
            if attempt[0] not in ("127.0.0.1", "localhost") and attempt[0] not in self.servers
        ]


@pytest.fixture
def network(monkeypatch):
    return Network(monkeypatch)


@pytest.fixture
def private_server():
    """A server on 127.0.0.1 with a good image, counting requests: the policy must never let one through."""
    hits = []
    with image_server({"/good.png": Route(GOOD_PNG)}, hits) as base:
        yield base, hits


def loopback_spellings(port: int) -> list[str]:
    hosts = [
        "127.0.0.1",
        "localhost",
        "127.1",
        "2130706433",
        "0x7f000001",
        "017700000001",
        "0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "127.0.0.1.",
        "LOCALHOST",
    ]
    return [f"http://{host}:{port}/good.png" for host in hosts]


def refused(url: str, call) -> AcnImageError:
    with pytest.raises(AcnImageError) as error:
        call(url)
    assert str(error.value) == f"{url}: {UNAVAILABLE}" and error.value.reason == "download failed"
    return error.value


# --- the addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("127.255.0.9", False),
        ("10.1.2.3", False),
        ("172.31.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("2002:7f00:1::", False),
        ("2002:a00:1::", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("::127.0.0.1", False),
    ],
)
def test_only_public_addresses_pass(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


# --- every spelling of loopback, on every path that fetches ---------------------------------------


@pytest.mark.bad_input(
    "an image URL naming this machine: `127.0.0.1`, `localhost`, `127.1`, `2130706433`, `0x7f000001`, octal, `0`, "
    "`[::1]`, IPv4-mapped IPv6, a trailing dot, upper case",
    "refused before any connection (the server counts no request), with the one message of the URL policy",
)
def test_every_spelling_of_loopback_is_refused_before_a_connection(network, private_server):
    base, hits = private_server
    port = int(base.rsplit(":", 1)[1])
    for url in loopback_spellings(port):
        refused(url, load_image_url)
    assert hits == [] and network.attempts == []
    for url in loopback_spellings(port)[:2]:  # the same server, reached only when the user allows it
        assert load_image_url(url, allow_private_urls=True)[1] == GOOD_PNG
    assert len(hits) == 2


@pytest.mark.bad_input(
    "an image URL of cloud metadata (169.254.169.254), a private network (10/8, 172.16/12, 192.168/16), carrier NAT, "
    "IPv6 link-local or unique-local, or multicast",
    "refused without a packet sent, the same message as for any failed download",
)
@pytest.mark.parametrize("host", METADATA_AND_PRIVATE)
def test_private_and_metadata_addresses_are_never_tried(network, host):
    url = f"http://{host}/latest/meta-data/"
    refused(url, load_image_url)
    assert network.attempts == []


@pytest.mark.bad_input(
    "a loopback image URL given to the image processor, the pipeline, acn-predict, acn-explain and the Space app",
    "each refuses it with the URL policy's message and the server counts no request; `allow_private_urls` opens it "
    "per call, never from a saved processor config",
)
def test_every_path_that_fetches_applies_the_policy(network, private_server, tmp_path):
    base, hits = private_server
    url = f"{base}/good.png"
    processor = AcnImageProcessor()
    refused(url, lambda url: processor([url]))
    pipe = tiny_pipeline()
    refused(url, lambda url: pipe(TWEET, image=url))
    pipe.save_pretrained(tmp_path / "model")
    config = tmp_path / "model" / "preprocessor_config.json"  # a model folder that tries to open the door itself
    config.write_text(json.dumps({**json.loads(config.read_text()), "allow_private_urls": True}))
    loaded = predict.AcnPipeline.from_pretrained(tmp_path / "model", device="cpu")
    refused(url, lambda url: loaded(TWEET, image=url))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": TWEET, "image": url}) + "\n")
    argv = ["--model", str(tmp_path / "model"), "--input", str(tmp_path / "rows.jsonl"), "--device", "cpu"]
    predict.run(predict.parse_args([*argv, "--output", str(tmp_path / "out.jsonl")]))
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line["error"] == f"{tmp_path / 'rows.jsonl'}:1: cannot read image {url}: {UNAVAILABLE}"
    with pytest.raises(ValueError, match=re.escape(f"{url}: {UNAVAILABLE}")):  # acn-explain's one line
        explain.main(
            [
                "--model",
                str(tmp_path / "model"),
                "--text",
                TWEET,
                "--image",
                url,
                "--output",
                str(tmp_path / "x.png"),
                "--device",
                "cpu",
            ]
        )
    assert not (tmp_path / "x.png").exists()
    assert hits == [] and network.attempts == []
    predict.run(predict.parse_args([*argv, "--output", str(tmp_path / "ok.jsonl"), "--allow_private_urls"]))
    assert "error" not in json.loads((tmp_path / "ok.jsonl").read_text()) and len(hits) == 1


def test_the_space_app_never_fetches_a_private_url(network, private_server):
    gr = pytest.importorskip("gradio", reason="gradio is not installed: the app extra (make setup)")
    from tests.test_space_app import app

    base, hits = private_server
    with pytest.raises(gr.Error, match=re.escape(UNAVAILABLE)):
        app.photo_from_url(tiny_pipeline(), f"{base}/good.png")
    assert hits == [] and network.attempts == []


# --- redirects and the lookup ---------------------------------------------------------------------


@pytest.fixture
def public_server(network):
    """A server reached as http://images.example:PORT (a fake public address mapped onto 127.0.0.1)."""
    routes = {"/good.png": Route(GOOD_PNG)}
    hits = []
    with image_server(routes, hits) as base:
        port = int(base.rsplit(":", 1)[1])
        network.public(PUBLIC_ADDRESSES["images.example"], port)
        network.public(PUBLIC_ADDRESSES["cdn.example"], port)
        yield routes, hits, port


def redirect(location: str) -> Route:
    return Route(b"", status=302, content_type="text/plain", location=location)


@pytest.mark.bad_input(
    "a public image URL that redirects to loopback (by name or number), to a private address, to cloud metadata or "
    "to ftp://",
    "every hop is checked as the first: refused with the one message, the private server counts no request",
)
def test_every_redirect_hop_is_checked(network, public_server, private_server):
    routes, _, port = public_server
    private_base, private_hits = private_server
    private_port = int(private_base.rsplit(":", 1)[1])
    targets = {
        "/to-loopback.png": f"{private_base}/good.png",
        "/to-localhost.png": f"http://localhost:{private_port}/good.png",
        "/to-decimal.png": f"http://2130706433:{private_port}/good.png",
        "/to-metadata.png": "http://169.254.169.254/latest/meta-data/",
        "/to-private.png": "http://192.168.1.1/admin.png",
        "/to-ftp.png": f"ftp://127.0.0.1:{private_port}/good.png",
        "/to-relative-ok.png": "/good.png",
        "/to-cdn.png": f"http://cdn.example:{port}/good.png",
    }
    routes.update({path: redirect(target) for path, target in targets.items()})
    for path in [
        "/to-loopback.png",
        "/to-localhost.png",
        "/to-decimal.png",
        "/to-metadata.png",
        "/to-private.png",
        "/to-ftp.png",
    ]:
        refused(f"http://images.example:{port}{path}", load_image_url)
    assert private_hits == [] and network.off_machine_attempts() == []
    for path in ["/to-relative-ok.png", "/to-cdn.png"]:
        assert load_image_url(f"http://images.example:{port}{path}")[1] == GOOD_PNG


def test_redirects_are_bounded(public_server):
    routes, hits, port = public_server
    for hop in range(MAX_REDIRECTS + 1):
        routes[f"/hop{hop}.png"] = redirect(f"/hop{hop + 1}.png")
    routes[f"/hop{MAX_REDIRECTS + 1}.png"] = Route(GOOD_PNG)
    assert load_image_url(f"http://images.example:{port}/hop1.png")[1] == GOOD_PNG  # MAX_REDIRECTS hops
    hits.clear()
    refused(f"http://images.example:{port}/hop0.png", load_image_url)  # one more
    assert len(hits) == MAX_REDIRECTS + 1
    routes["/loop.png"] = redirect("/loop.png")
    refused(f"http://images.example:{port}/loop.png", load_image_url)


@pytest.mark.bad_input(
    "a host whose DNS answer changes between lookups (public, then 127.0.0.1), or that answers both at once",
    "looked up once, connected to the checked address; a mixed answer is refused",
)
def test_the_host_is_looked_up_once_and_the_checked_address_is_used(network, public_server, private_server):
    _, public_hits, port = public_server
    _, private_hits = private_server
    network.answers["rebind.example"] = [[PUBLIC_ADDRESSES["images.example"]], ["127.0.0.1"]]
    assert load_image_url(f"http://rebind.example:{port}/good.png")[1] == GOOD_PNG
    assert network.lookups.count("rebind.example") == 1 and len(public_hits) == 1 and private_hits == []
    network.answers["mixed.example"] = [[PUBLIC_ADDRESSES["images.example"], "127.0.0.1"]]
    refused(f"http://mixed.example:{port}/good.png", load_image_url)
    assert len(public_hits) == 1


@pytest.mark.bad_input(
    "image URLs that fail differently: a refused connection, HTTP 404 and 500, an HTML page, an unknown host",
    "one message for all, naming the URL and nothing of what the address held (no status, no content type)",
)
def test_failures_read_alike(network, public_server):
    routes, _, port = public_server
    routes.update(
        {
            "/gone.png": Route(b"no", status=404, content_type="text/plain"),
            "/broken.png": Route(b"no", status=500, content_type="text/plain"),
            "/page.png": Route(b"<html>secret admin page</html>", content_type="text/html"),
        }
    )
    network.servers[PUBLIC_ADDRESSES["cdn.example"]] = 1  # nothing listens there
    for url in [
        f"http://images.example:{port}/gone.png",
        f"http://images.example:{port}/broken.png",
        f"http://images.example:{port}/page.png",
        f"http://cdn.example:{port}/good.png",
        "http://no-such-host.invalid/a.png",
    ]:
        refused(url, load_image_url)


# --- the deadline ---------------------------------------------------------------------------------


DRIP_SECONDS = 0.3  # one body byte this often: every read is quick, the download is not
TIMEOUT = 1.0


@pytest.mark.bad_input(
    "an image server that sends a byte every 0.3 s for ever (timeout 1 s)",
    "the caller hears `timed out` at the deadline and the connection is closed then: the server sees it go "
    "within a second, no thread keeps reading",
)
def test_a_dripping_download_is_closed_at_its_deadline():
    listener = socket.create_server(("127.0.0.1", 0))
    closed_at = []

    def drip():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(int(60 / DRIP_SECONDS)):
                try:
                    connection.sendall(b"x")
                except OSError:
                    closed_at.append(time.monotonic())
                    return
                time.sleep(DRIP_SECONDS)

    server = threading.Thread(target=drip, daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/drip.png"
    start = time.monotonic()
    with pytest.raises(AcnImageError, match=r"took more than 1 s") as error:
        load_image_url(url, timeout=TIMEOUT, allow_private_urls=True)
    assert error.value.reason == "timed out" and time.monotonic() - start < TIMEOUT + 1
    server.join(10)
    listener.close()
    assert closed_at, "the download was still reading 10 s after its deadline"
    assert closed_at[0] - start < TIMEOUT + 3 * DRIP_SECONDS
