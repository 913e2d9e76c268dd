"""qcluster.Client: asks a separately run QCluster agent, over its HTTP API,
who leads the cluster. The same calls as the original QCluster SDK
(is_leader, get_leader_info returning a Peer or None) for programs that run
beside an agent rather than being a peer themselves (that is
qcluster.QCluster). Standard library only, blocking, one request a
connection; never loads libqcluster.
"""

import http.client
import json
import os
import re
import socket
import ssl
import time
import urllib.parse

__all__ = ["Client", "Peer", "QClusterError"]

DEFAULT_API = "127.0.0.1:8001"
# The agent holds a long-poll at most this long (src/api/api.h QC_API_MAX_WAIT_S).
MAX_WAIT = 300


_CHECK_NAME = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")


class QClusterError(Exception):
    """What QCluster could not do: a bad config (naming the key), the
    library not found, an agent that could not be asked or answered with an
    error."""


class Peer:
    """A member of the cluster as in the original SDK (host, port,
    identifier, metadata), plus role and up; term for a leader, voter and
    priority for a member; healthy (its health checks pass, as the agent
    asked knows it) and, for a member, checks (a list of {"name",
    "status"}). What the answer did not say is None."""

    def __init__(self, identifier, host, port, metadata=None, role=None, up=None, term=None,
                 voter=None, priority=None, healthy=None, checks=None):
        self.identifier = identifier
        self.host = host
        self.port = port
        self.metadata = metadata if metadata is not None else {}
        self.role = role
        self.up = up
        self.term = term
        self.voter = voter
        self.priority = priority
        self.healthy = healthy
        self.checks = checks

    def __eq__(self, other):
        if not isinstance(other, Peer):
            return NotImplemented
        return (self.identifier, self.host, self.port) == (other.identifier, other.host, other.port)

    def __hash__(self):
        return hash((self.identifier, self.host, self.port))

    def __repr__(self):
        return ("Peer(identifier={!r}, host={!r}, port={!r}, metadata={!r}, role={!r}, up={!r}, "
                "healthy={!r})").format(self.identifier, self.host, self.port, self.metadata,
                                        self.role, self.up, self.healthy)


class _Deadline:
    """A connected socket whose every read waits only for the time left
    until deadline (time.monotonic()): http.client's timeout is per
    operation, so an agent sending a byte now and then could stretch a call
    without end."""

    deadline = 0.0

    def recv_into(self, buffer, nbytes=0, flags=0):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.settimeout(left)
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineSocket(_Deadline, socket.socket):
    """A plain connection with a deadline."""


class _DeadlineSSLSocket(_Deadline, ssl.SSLSocket):
    """A TLS connection with a deadline."""


def _tls_context(cacert, cert, key):
    """The SSLContext of an https:// client: TLS 1.2 or later, the agent's
    certificate verified against cacert (None: the system's CAs) and its
    name checked; cert and key (both or neither) for an agent with
    api_tls_client_ca. QClusterError when a file cannot be used."""
    if bool(cert) != bool(key):
        raise ValueError("cert and key go together")
    try:
        ctx = ssl.create_default_context(cafile=cacert or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise QClusterError("cannot use the TLS files (cacert {!r}, cert {!r}, key {!r}): {}"
                            .format(cacert, cert, key, e)) from e
    ctx.sslsocket_class = _DeadlineSSLSocket
    return ctx


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection whose whole request, connecting to the last byte of
    the answer, ends by deadline."""

    def __init__(self, host, port, deadline, tls=None):
        super().__init__(host, port, timeout=max(deadline - time.monotonic(), 0.001))
        self.deadline = deadline
        self.tls = tls

    def connect(self):
        super().connect()
        plain = self.sock
        left = max(self.deadline - time.monotonic(), 0.001)
        if self.tls is not None:  # the handshake runs within the same deadline
            plain.settimeout(left)
            self.sock = self.tls.wrap_socket(plain, server_hostname=self.host)
        else:
            self.sock = _DeadlineSocket(plain.family, plain.type, plain.proto,
                                        fileno=plain.detach())
        self.sock.deadline = self.deadline
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))


def _split_api(api):
    """("host", port) of "HOST:PORT" or "[V6]:PORT", maybe after http:// or
    https://; ValueError otherwise."""
    scheme, found, rest = api.partition("://")
    if found and scheme.lower() in ("http", "https"):
        api = rest
    host, sep, port = api.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise ValueError("bad api {!r}: expected HOST:PORT or https://HOST:PORT".format(api))
    return host, int(port)


def _api_from_conf(conf):
    """The API address a node's config gives: api_host (127.0.0.1) and
    api_port (listen_port + 1000), as the agent reads them, https:// with
    api_tls_cert; None when the config says nothing of either."""
    if "api_port" not in conf and "listen_port" not in conf:
        return None
    port = conf.get("api_port")
    if port is None:
        port = int(conf["listen_port"]) + 1000
    if int(port) == 0:
        raise ValueError("the node's API is off (api_port = 0)")
    scheme = "https://" if conf.get("api_tls_cert") else ""  # it serves HTTPS only then
    return "{}{}:{}".format(scheme, conf.get("api_host") or "127.0.0.1", int(port))


class Client:
    """A client of one agent's API.

    Client(api="HOST:PORT") asks that agent; Client(**conf) with a node's
    config asks that node's API (api_host, api_port
    or listen_port + 1000). Without either: $QCLUSTER_API, else
    127.0.0.1:8001. token (or the config's api_token) is sent as a bearer
    token; timeout bounds a whole request, connecting to the last byte of
    the answer, in seconds (a long-poll gets its wait on top).

    api="https://HOST:PORT" asks an agent with api_tls_cert over TLS: its
    certificate must chain to cacert (a PEM file; default $QCLUSTER_CACERT,
    else the system's CAs) and name HOST; cert and key (default
    $QCLUSTER_CERT, $QCLUSTER_KEY) are this client's certificate and key,
    for an agent with api_tls_client_ca.
    """

    def __init__(self, api=None, token=None, timeout=5.0, cacert=None, cert=None, key=None,
                 **conf):
        api = api or _api_from_conf(conf) or os.environ.get("QCLUSTER_API") or DEFAULT_API
        self.host, self.port = _split_api(api)
        self.api = api
        self.tls = None
        if api.lower().startswith("https://"):
            env = os.environ.get
            self.tls = _tls_context(cacert or env("QCLUSTER_CACERT"),
                                    cert or env("QCLUSTER_CERT"), key or env("QCLUSTER_KEY"))
        self.token = token if token is not None else conf.get("api_token")
        if not timeout or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        self._known = None  # (term, leader identifier or None) last answered

    def _get(self, path, timeout=None):
        """(status, decoded JSON) of GET path; QClusterError when the agent
        cannot be asked or the answer is not JSON."""
        return self._call("GET", path, None, timeout)

    def _call(self, method, path, body, timeout=None):
        """(status, decoded JSON) of method path with body (bytes or None)."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        conn = _Connection(self.host, self.port, time.monotonic() + (timeout or self.timeout),
                           self.tls)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise QClusterError("cannot reach agent at {}: {}".format(self.api, e)) from e
        finally:
            conn.close()
        try:
            return status, json.loads(body)
        except ValueError as e:
            raise QClusterError("bad answer from agent at {}".format(self.api)) from e

    def _bad_answer(self):
        return QClusterError("bad answer from agent at {}".format(self.api))

    def _get_ok(self, path, kind=dict):
        """The decoded 200 answer of GET path, which must be a kind (a JSON
        object, or a list); QClusterError otherwise."""
        status, v = self._get(path)
        if status != 200:
            msg = v.get("error") if isinstance(v, dict) else None
            raise QClusterError("agent at {} answered HTTP {}: {}".format(self.api, status, msg))
        if not isinstance(v, kind):
            raise self._bad_answer()
        return v

    def status(self):
        """The agent's view, as GET /v1/status: identifier, role, term,
        leader, peers, commit_index."""
        return self._get_ok("/v1/status")

    def members(self, healthy=None):
        """Every member, this agent first, as a Peer with role, up, voter,
        priority, healthy and checks (GET /v1/members); healthy=True (or
        False) lists only the members known healthy (or not), for
        discovery."""
        if healthy not in (None, True, False):
            raise ValueError("healthy must be True, False or None")
        query = "" if healthy is None else "?healthy=" + ("true" if healthy else "false")
        members = self._get_ok("/v1/members" + query, list)
        if not all(isinstance(m, dict) for m in members):
            raise self._bad_answer()
        return [Peer(m.get("identifier"), m.get("host"), m.get("port"), m.get("metadata"),
                     role=m.get("role"), up=m.get("up"), voter=m.get("voter"),
                     priority=m.get("priority"), healthy=m.get("healthy"),
                     checks=m.get("checks")) for m in members]

    def checks(self):
        """This agent's health checks (GET /v1/checks): a list of dicts with
        name, kind, status ("passing" or "failing"), output and since."""
        checks = self._get_ok("/v1/checks", list)
        if not all(isinstance(k, dict) for k in checks):
            raise self._bad_answer()
        return checks

    def _report(self, name, verdict, output):
        if not isinstance(name, str) or not _CHECK_NAME.match(name):
            raise ValueError("bad check name {!r}".format(name))
        body = (output or "").encode("utf-8") if not isinstance(output, bytes) else output
        status, v = self._call("PUT", "/v1/checks/{}/{}".format(name, verdict), body)
        if status != 200:
            msg = v.get("error") if isinstance(v, dict) else None
            raise QClusterError("agent at {} answered HTTP {}: {}".format(self.api, status, msg))

    def check_pass(self, name, output=None):
        """Reports a pass of the ttl check name (PUT /v1/checks/NAME/pass);
        output is kept as its output. QClusterError when refused (no such
        check: HTTP 404; not a ttl check: 409; no token: 401)."""
        self._report(name, "pass", output)

    def check_fail(self, name, output=None):
        """Reports a failure of the ttl check name, as check_pass."""
        self._report(name, "fail", output)

    def is_leader(self):
        """True when the agent this client asks is the leader."""
        return self.status().get("role") == "leader"

    def _remember(self, v, identifier):
        # What this leader answer said (its term, the leader or none): the
        # next wait_for_leader_change waits for that to differ.
        term = v.get("term") if isinstance(v, dict) else None
        if isinstance(term, int) and not isinstance(term, bool) and term >= 0:
            self._known = (term, identifier)

    def _leader(self, path, timeout=None):
        status, v = self._get(path, timeout)
        if status == 503:
            self._remember(v, None)
            return None
        if status == 200 and not isinstance(v, dict):
            raise self._bad_answer()
        if status != 200 or "identifier" not in v:
            msg = v.get("error") if isinstance(v, dict) else None
            raise QClusterError("agent at {} answered HTTP {}: {}".format(self.api, status, msg))
        self._remember(v, v["identifier"])
        return Peer(v["identifier"], v.get("host"), v.get("port"), v.get("metadata"),
                    role="leader", up=True, voter=True, priority=v.get("priority"),
                    term=v.get("term"), healthy=v.get("healthy"))

    def get_leader_info(self):
        """The leader the agent knows, as a Peer; None when no leader is
        known (no quorum, or an election under way)."""
        return self._leader("/v1/leader")

    def wait_for_leader_change(self, timeout=MAX_WAIT, term=None):
        """Waits up to timeout seconds (at most 300) for the leader or the
        term to differ from what this client's last leader answer said
        (get_leader_info() or a wait; on the first call, the leader now),
        on the API's long-poll; then answers as get_leader_info(). A loop of
        calls never misses a change: after None (no leader), the next call
        returns a leader elected meanwhile at once. With term (a term read
        earlier), it waits for the term alone to differ from it."""
        timeout = min(float(timeout), MAX_WAIT)
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        if term is not None:
            query = "term={:d}".format(int(term))
        else:
            if self._known is None:
                self._leader("/v1/leader")
            if self._known is None:
                raise self._bad_answer()
            known_term, leader = self._known
            query = "term={:d}&leader={}".format(
                known_term, urllib.parse.quote(leader if leader is not None else "none", safe=""))
        path = "/v1/leader?wait={:.3f}&{}".format(timeout, query)
        return self._leader(path, timeout + self.timeout)
