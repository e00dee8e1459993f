"""The feed fetcher's guard against server-side request forgery: which addresses are refused,
that the connection goes to the address that was vetted (DNS rebinding), redirects, and TLS
still checked against the URL's host name. The resolver and socket.create_connection are
replaced so that a made-up "public" address leads to a loopback server; nothing leaves loopback."""

import http.server
import ipaddress
import socket
import ssl

import pytest

from service.advisories.feeds.fetch import FetchError, check_destination, fetch, refusal
from tests.loopback_server import serve_in_thread
from tests.tls_certs import make_certificates

PUBLIC = "93.184.215.14"  # stands for a server on the internet; FakeNet leads it to loopback


@pytest.mark.parametrize(
    ("address", "refused", "refused_with_allow_private"),
    [
        ("8.8.8.8", None, None),
        ("2606:4700::1111", None, None),
        ("::ffff:8.8.8.8", None, None),  # IPv4-mapped: judged by the IPv4 address
        ("2002:808:808::1", None, None),  # 6to4 of a public IPv4 address
        ("127.0.0.1", "loopback", None),
        ("127.255.0.9", "loopback", None),
        ("::1", "loopback", None),
        ("10.1.2.3", "private", None),
        ("172.16.0.1", "private", None),
        ("192.168.0.1", "private", None),
        ("100.64.0.1", "private", None),  # carrier-grade NAT
        ("fd12:3456::1", "private", None),  # unique local
        ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1, loopback", None),
        ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1, private", None),
        ("169.254.169.254", "link-local", "link-local"),  # cloud metadata
        ("fe80::1", "link-local", "link-local"),
        ("::ffff:169.254.169.254", "link-local", "link-local"),
        ("224.0.0.1", "multicast", "multicast"),
        ("ff02::1", "multicast", "multicast"),
        ("0.0.0.0", "unspecified", "unspecified"),
        ("::", "unspecified", "unspecified"),
        ("0.1.2.3", "not globally routable", "not globally routable"),
        ("255.255.255.255", "reserved", "reserved"),
        ("240.0.0.1", "reserved", "reserved"),
        ("198.18.0.1", "not globally routable", "not globally routable"),  # benchmarking
        ("192.0.2.1", "documentation", "documentation"),
        ("203.0.113.9", "documentation", "documentation"),
        ("2001:db8::1", "documentation", "documentation"),
        ("3fff::1", "documentation", "documentation"),
        ("64:ff9b::7f00:1", "NAT64 for 127.0.0.1", "NAT64"),
        ("64:ff9b::808:808", "NAT64 for 8.8.8.8", "NAT64"),  # Python calls it global
        ("64:ff9b:1::1", "NAT64", "NAT64"),
        ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1", "IPv4-compatible"),
        ("::8.8.8.8", "IPv4-compatible", "IPv4-compatible"),
        ("2002:7f00:1::1", "6to4 for 127.0.0.1", "6to4"),  # Python calls it global
        ("2002:c0a8:1::1", "6to4 for 192.168.0.1", "6to4"),
        ("2001::1", "Teredo", "Teredo"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo", "Teredo"),
        ("fec0::1", "site-local", "site-local"),  # Python calls it global
    ],
)
def test_address_table(address, refused, refused_with_allow_private):
    ip = ipaddress.ip_address(address)
    for allow_private, expected in ((False, refused), (True, refused_with_allow_private)):
        why = refusal(ip, allow_private=allow_private)
        if expected is None:
            assert why is None, (address, allow_private, why)
        else:
            assert why is not None and expected in why, (address, allow_private, why)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:7f00:1]/x",
        "http://[64:ff9b::a9fe:a9fe]/x",
        "http://[::7f00:1]/x",
        "http://[2002:7f00:1::]/x",
        "http://2130706433/x",  # 127.0.0.1 written as one number
        "http://0x7f000001/x",
        "http://127.1/x",
        "http://0/x",
    ],
)
def test_disguised_loopback_urls_are_refused(url):
    with pytest.raises(FetchError, match="non-public"):
        check_destination(url, allow_private=False)


def test_only_http_urls():
    for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.org/a"):
        with pytest.raises(FetchError, match="only http"):
            check_destination(url, allow_private=True)


class FakeNet:
    """The resolver and socket.create_connection, replaced: names in `answers` resolve to the
    next of their answer lists (the last one repeats), an address in `nat` is connected to a
    loopback port instead, and every look-up and connection attempt is recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.nat: dict[str, int] = {}
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

        def getaddrinfo(host, port, *args, **kwargs):
            if host not in self.answers:
                return real_getaddrinfo(host, port, *args, **kwargs)
            self.lookups.append(host)
            queue = self.answers[host]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
                if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses
            ]

        def create_connection(address, *args, **kwargs):
            host, port = address[0], address[1]
            self.connects.append((host, port))
            if host in self.nat:
                address = ("127.0.0.1", self.nat[host])
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture
def net(monkeypatch):
    return FakeNet(monkeypatch)


@pytest.fixture
def serve():
    """serve(routes, tls=None) -> (port, requests): a loopback HTTP(S) server answering
    routes[path] = (status, headers, body) and recording (path, Host header) of each request."""
    servers = []

    def start(routes, tls: ssl.SSLContext | None = None):
        requests: list[tuple[str, str | None]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append((self.path, self.headers.get("Host")))
                status, headers, body = routes.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.handle_error = lambda *args: None  # a refused TLS handshake is expected
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        serve_in_thread(server)
        servers.append(server)
        return server.server_address[1], requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _fetch(url, *, allow_private=False):
    return fetch(
        url,
        etag=None,
        last_modified=None,
        timeout_s=5,
        max_bytes=1 << 20,
        allow_private=allow_private,
    )


def test_dns_rebinding_reaches_only_the_vetted_address(net, serve):
    public_port, public_requests = serve({"/feed": (200, {}, b"public feed")})
    internal_port, internal_requests = serve({"/feed": (200, {}, b"internal secret")})
    net.nat[PUBLIC] = public_port
    # A rebinding DNS server: public for the first question, loopback for every later one.
    net.answers["rebind.test"] = [[PUBLIC], ["127.0.0.1"]]

    fetched = _fetch(f"http://rebind.test:{internal_port}/feed")

    assert fetched.body == b"public feed"
    assert net.lookups == ["rebind.test"]  # one look-up: httpx did not resolve the name again
    assert net.connects == [(PUBLIC, internal_port)]
    assert public_requests == [("/feed", f"rebind.test:{internal_port}")]  # Host kept
    assert internal_requests == []


def test_an_earlier_check_is_not_trusted_at_connect_time(net, serve):
    internal_port, internal_requests = serve({"/feed": (200, {}, b"internal secret")})
    net.answers["rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
    url = f"http://rebind.test:{internal_port}/feed"
    check_destination(url, allow_private=False)  # the first answer passes

    with pytest.raises(FetchError, match=r"127\.0\.0\.1, a non-public address \(loopback\)"):
        _fetch(url)
    assert internal_requests == [] and net.connects == []


def test_a_name_with_a_private_answer_among_public_ones_is_refused(net):
    net.answers["mixed.test"] = [[PUBLIC, "10.0.0.7"]]
    with pytest.raises(FetchError, match=r"10\.0\.0\.7, a non-public address"):
        _fetch("http://mixed.test/feed")
    assert net.connects == []


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://127.0.0.1:{port}/feed", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/feed", "IPv4-mapped 127.0.0.1, loopback"),
        ("http://localhost:{port}/feed", "loopback"),
        ("http://2130706433:{port}/feed", "loopback"),
        ("http://internal.test:{port}/feed", "private network"),
        ("http://[64:ff9b::a9fe:a9fe]:{port}/feed", "NAT64 for 169.254.169.254"),
        ("file:///etc/passwd", "only http(s)"),
    ],
)
def test_a_redirect_to_a_non_public_address_is_refused(net, serve, location, why):
    internal_port, internal_requests = serve({"/feed": (200, {}, b"internal secret")})
    target = location.format(port=internal_port)
    public_port, _ = serve({"/moved": (302, {"Location": target}, b"")})
    net.nat[PUBLIC] = public_port
    net.answers["feeds.test"] = [[PUBLIC]]
    net.answers["internal.test"] = [["10.0.0.7"]]

    with pytest.raises(FetchError) as refused:
        _fetch("http://feeds.test/moved")

    assert why in str(refused.value)
    assert net.connects == [(PUBLIC, 80)]  # the redirect's target was never connected to
    assert internal_requests == []


def test_allow_private_still_refuses_link_local_and_redirects_are_vetted(net, serve):
    port, requests = serve(
        {"/moved": (301, {"Location": "http://metadata.test/latest/meta-data/"}, b"")}
    )
    net.answers["metadata.test"] = [["169.254.169.254"]]
    with pytest.raises(
        FetchError, match=r"169\.254\.169\.254, a non-public address \(link-local\)"
    ):
        _fetch(f"http://127.0.0.1:{port}/moved", allow_private=True)
    assert requests == [("/moved", f"127.0.0.1:{port}")]
    assert net.connects == [("127.0.0.1", port)]


def test_the_next_vetted_address_is_tried_when_one_does_not_answer(net, serve):
    port, requests = serve({"/feed": (200, {}, b"ok")})
    net.answers["dual.test"] = [["::1", "127.0.0.1"]]  # the server listens on 127.0.0.1 only
    assert _fetch(f"http://dual.test:{port}/feed", allow_private=True).body == b"ok"
    assert net.connects == [("::1", port), ("127.0.0.1", port)]
    assert requests == [("/feed", f"dual.test:{port}")]


def test_proxies_from_the_environment_do_not_bypass_the_guard(net, serve, monkeypatch):
    port, requests = serve({"/feed": (200, {}, b"ok")})
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would resolve names itself
    assert _fetch(f"http://127.0.0.1:{port}/feed", allow_private=True).body == b"ok"
    assert net.connects == [("127.0.0.1", port)] and len(requests) == 1


def test_tls_is_verified_for_the_url_host_while_connecting_to_the_vetted_address(
    net, serve, tmp_path, monkeypatch
):
    certificates = make_certificates(tmp_path, "feed.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))  # httpx's trust store
    context, sni = certificates.server_context(), []
    context.sni_callback = lambda _socket, server_name, _context: sni.append(server_name)
    port, requests = serve({"/feed": (200, {}, b"over tls")}, tls=context)
    net.answers["feed.test"] = [["127.0.0.1"]]
    net.answers["other.test"] = [["127.0.0.1"]]

    assert _fetch(f"https://feed.test:{port}/feed", allow_private=True).body == b"over tls"
    assert sni == ["feed.test"] and requests == [("/feed", f"feed.test:{port}")]
    assert net.connects == [("127.0.0.1", port)]

    # The same server under a name its certificate does not carry: refused by TLS.
    with pytest.raises(FetchError, match="certificate verify failed"):
        _fetch(f"https://other.test:{port}/feed", allow_private=True)
    assert sni == ["feed.test", "other.test"] and len(requests) == 1
