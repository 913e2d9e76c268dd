"""The Python client SDK (python/qcluster/_client.py: qcluster.Client) against real agents: each test
class starts its own bin/qcluster agents on 127.0.0.1 on ports reserved
by ports.py (free, and taken by no other run at once), with
original-format JSON configs in a temp dir, and ends them by PID.
Run: PYTHONPATH=python python3 -m unittest -v tests/python/test_client.py
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

from qcluster import Client, Peer, QClusterError  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ports  # noqa: E402

QCLUSTER = os.environ.get("QC_BIN", os.path.join(ROOT, "bin", "qcluster"))


def wait_for(fn, timeout=15.0):
    """Polls fn every 20 ms until it returns something truthy; None after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


class Cluster:
    """n agents: node1..nodeN on cluster ports base+i and API ports
    base+20+i, with metadata {"server_port": base+40+i}."""

    def __init__(self, n, extra=None):
        self.base = ports.reserve()  # released by stop()
        self.dir = tempfile.mkdtemp(prefix="qc-py-")
        self.n = n
        self.procs = {}
        self.confs = {}
        for i in range(1, n + 1):
            peers = [{"host": "127.0.0.1", "port": self.base + j, "identifier": "node%d" % j,
                      "metadata": {"slot": j}} for j in range(1, n + 1) if j != i]
            self.confs[i] = {"identifier": "node%d" % i, "listen_host": "127.0.0.1",
                             "listen_port": self.base + i, "api_port": self.base + 20 + i,
                             "metadata": {"server_port": self.base + 40 + i}, "peers": peers}
            self.confs[i].update(extra or {})
            with open(self.path(i), "w") as f:
                json.dump(self.confs[i], f)

    def path(self, i):
        return os.path.join(self.dir, "node%d.json" % i)

    def api(self, i):
        return "127.0.0.1:%d" % (self.base + 20 + i)

    def start(self, i):
        log = open(os.path.join(self.dir, "node%d.log" % i), "ab")
        self.procs[i] = subprocess.Popen([QCLUSTER, "agent", self.path(i)], cwd=self.dir,
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def kill(self, i):
        p = self.procs.pop(i, None)
        if p:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)

    def stop(self):
        for i in list(self.procs):
            self.kill(i)
        self.base.release()
        if not os.environ.get("QC_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def agreed_leader(self, timeout=15.0):
        """The identifier every running node names as leader, once they agree."""
        def agree():
            names = set()
            for i in self.procs:
                try:
                    leader = Client(api=self.api(i), timeout=2).get_leader_info()
                except QClusterError:
                    return None
                names.add(leader.identifier if leader else None)
            return names.pop() if len(names) == 1 and None not in names else None
        name = wait_for(agree, timeout)
        if not name:
            raise AssertionError("no agreed leader; logs in " + self.dir)
        return name


class BadAgent:
    """A fake agent on a loopback port that answers every request badly:
    with body (bytes) at once, or when drip is set with a 200 whose headers
    come one line a second for a minute, then an empty body. close() stops
    it."""

    def __init__(self, body=b"", drip=False):
        self.body, self.drip = body, drip
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.api = "127.0.0.1:%d" % self.srv.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.done.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        try:
            c.settimeout(5)
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = c.recv(4096)
                if not chunk:
                    return
                req += chunk
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            for i in range(60 if self.drip else 0):
                if self.done.wait(1):
                    return
                c.sendall(b"X-Drip: %d\r\n" % i)
            body = b"" if self.drip else self.body
            c.sendall(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.done.set()
        self.srv.close()


def started(n, run=None, extra=None):
    c = Cluster(n, extra)
    try:
        for i in run or range(1, n + 1):
            c.start(i)
    except BaseException:
        c.stop()
        raise
    return c


class LeaderInfoTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = started(3)
        cls.addClassCleanup(cls.c.stop)
        cls.leader = cls.c.agreed_leader()
        cls.li = int(cls.leader[len("node"):])

    def test_every_node_names_the_leader_with_its_address_and_metadata(self):
        c = self.c
        for i in range(1, 4):
            # the original SDK's way: the node's own config as keyword arguments
            cluster = Client(**c.confs[i])
            self.assertEqual(c.api(i), cluster.api)
            leader = cluster.get_leader_info()
            self.assertIsInstance(leader, Peer)
            self.assertEqual(self.leader, leader.identifier)
            self.assertEqual("127.0.0.1", leader.host)
            self.assertEqual(c.base + self.li, leader.port)
            self.assertEqual(c.base + 40 + self.li, leader.metadata["server_port"])
            self.assertEqual("leader", leader.role)
            self.assertTrue(leader.up)
            self.assertEqual(1, leader.priority)  # the default
            self.assertEqual(i == self.li, cluster.is_leader())

    def test_metadata_that_is_not_utf8_is_refused_and_every_node_stays_readable(self):
        # What yajl alone lets through (issue 12): once one node took it,
        # every client of every node failed with "bad answer from agent".
        import http.client
        c, i = self.c, self.li
        bad = [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82",
               b"\\ud800"]

        def put(body):
            host, port = c.api(i).split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                conn.request("PUT", "/v1/self/metadata", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                return r.status, json.loads(r.read().decode("utf-8"))
            finally:
                conn.close()

        for b in bad:
            status, answer = put(b'{"server_port": %d, "k": "' % (c.base + 40 + i) + b + b'"}')
            self.assertEqual(400, status, b)
            self.assertEqual("metadata.k: text is not valid UTF-8", answer["error"], b)
        # valid 2-, 3- and 4-byte text goes through and reads back as written
        status, _ = put(('{"server_port": %d, "k": "\u00e9\u20ac\U0001F600"}'
                         % (c.base + 40 + i)).encode("utf-8"))
        self.assertEqual(200, status)
        want = "\u00e9\u20ac\U0001F600"
        for n in range(1, 4):
            cluster = Client(api=c.api(n), timeout=2)
            got = wait_for(lambda: [m for m in cluster.members()
                                    if m.identifier == self.leader and m.metadata.get("k") == want])
            self.assertTrue(got, "node%d never showed the new metadata" % n)
            self.assertEqual(self.leader, cluster.get_leader_info().identifier)

    def test_status_and_members(self):
        cluster = Client(api=self.c.api(1))
        st = cluster.status()
        self.assertEqual("node1", st["identifier"])
        self.assertEqual(self.leader, st["leader"]["identifier"])
        members = cluster.members()
        self.assertEqual(["node1", "node2", "node3"], sorted(m.identifier for m in members))
        roles = {m.identifier: m.role for m in members}
        self.assertEqual("leader", roles[self.leader])
        self.assertTrue(all(m.up for m in members))

    def test_wait_ends_at_the_timeout_with_the_same_leader(self):
        leader = Client(api=self.c.api(1)).wait_for_leader_change(timeout=0.3)
        self.assertEqual(self.leader, leader.identifier)


class HealthTest(unittest.TestCase):
    def setUp(self):
        self.c = started(2, extra={
            "api_token": "tok", "heartbeat_ms": 50, "election_timeout_ms": 300,
            "checks": [{"name": "beat", "ttl_ms": 60000, "interval_ms": 50, "rise": 1, "fall": 1}]})
        self.addCleanup(self.c.stop)

    def test_reports_lists_checks_and_discovers_only_healthy_members(self):
        c = self.c
        c.agreed_leader()
        c1 = Client(api=c.api(1), token="tok")
        c2 = Client(api=c.api(2), token="tok")
        c1.check_pass("beat", "one ok")
        c2.check_pass("beat")

        def healthy_names(cl):
            return sorted(m.identifier for m in cl.members(healthy=True))
        self.assertTrue(wait_for(lambda: healthy_names(c1) == ["node1", "node2"]))
        [k] = c1.checks()
        self.assertEqual(("beat", "ttl", "passing", "one ok"),
                         (k["name"], k["kind"], k["status"], k["output"]))
        c2.check_fail("beat", "gone")
        self.assertTrue(wait_for(lambda: healthy_names(c1) == ["node1"]))
        by = {m.identifier: m for m in c1.members()}
        self.assertIs(False, by["node2"].healthy)
        self.assertEqual([{"name": "beat", "status": "failing"}], by["node2"].checks)
        self.assertEqual(["node2"], [m.identifier for m in c1.members(healthy=False)])
        self.assertIn(c1.get_leader_info().healthy, (True, False))
        with self.assertRaisesRegex(QClusterError, "HTTP 404"):
            c1.check_pass("nope")
        with self.assertRaisesRegex(QClusterError, "HTTP 401"):
            Client(api=c.api(1)).check_fail("beat")
        with self.assertRaises(ValueError):
            c1.check_pass("a/b")
        with self.assertRaises(ValueError):
            c1.members(healthy="yes")


class FailoverTest(unittest.TestCase):
    def setUp(self):
        self.c = started(3)
        self.addCleanup(self.c.stop)

    def test_wait_returns_once_the_leader_is_killed(self):
        c = self.c
        leader = c.agreed_leader()
        li = int(leader[len("node"):])
        fi = li % 3 + 1
        cluster = Client(api=c.api(fi))
        # the term read before the kill is the baseline: a follower that
        # notices before the wait begins is no race
        term = cluster.status()["term"]
        c.kill(li)
        after = cluster.wait_for_leader_change(timeout=120, term=term)
        self.assertTrue(after is None or after.identifier != leader)
        self.assertGreater(cluster.status()["term"], term)
        new = wait_for(lambda: (lambda p: p and p.identifier != leader and p)(
            cluster.get_leader_info()))
        self.assertIsNotNone(new)

    def test_a_loop_of_waits_gets_the_new_leader_never_the_timeout(self):
        c = self.c
        leader = c.agreed_leader()
        li = int(leader[len("node"):])
        cluster = Client(api=c.api(li % 3 + 1))
        self.assertEqual(leader, cluster.get_leader_info().identifier)
        c.kill(li)
        # Each call returns as soon as what the last one said is out of
        # date: None while the survivors elect, then the new leader. The
        # caller handles each answer for a while (the sleep): a leader
        # elected meanwhile must not make the next call wait out its 60 s.
        got = None
        for _ in range(20):
            t0 = time.monotonic()
            got = cluster.wait_for_leader_change(timeout=60)
            self.assertLess(time.monotonic() - t0, 30, "the call waited out its wait")
            if got is not None:
                break
            time.sleep(0.3)
        self.assertIsNotNone(got)
        self.assertNotEqual(leader, got.identifier)


class NoLeaderTest(unittest.TestCase):
    def setUp(self):
        self.c = started(3, run=[1])  # alone of three: no quorum
        self.addCleanup(self.c.stop)

    def test_no_leader_is_none(self):
        cluster = Client(api=self.c.api(1))

        def answers():
            try:
                return cluster.status()
            except QClusterError:
                return None
        self.assertIsNotNone(wait_for(answers))
        self.assertIsNone(cluster.get_leader_info())
        self.assertFalse(cluster.is_leader())
        self.assertIsNone(cluster.wait_for_leader_change(timeout=0.2))


class AddressTest(unittest.TestCase):
    def test_unreachable_agent_raises(self):
        # nothing listens on the API port of a cluster that was never started
        c = Cluster(1)
        self.addCleanup(c.stop)
        cluster = Client(api=c.api(1), timeout=2)
        with self.assertRaisesRegex(QClusterError, "cannot reach agent at " + c.api(1)):
            cluster.get_leader_info()
        with self.assertRaises(QClusterError):
            cluster.is_leader()
        with self.assertRaises(QClusterError):
            cluster.wait_for_leader_change(timeout=1)

    def test_an_answer_dripping_in_past_the_timeout_raises(self):
        bad = BadAgent(drip=True)
        self.addCleanup(bad.close)
        cluster = Client(api=bad.api, timeout=2)
        t0 = time.monotonic()
        with self.assertRaisesRegex(QClusterError, "timed out"):
            cluster.get_leader_info()
        # the answer takes 60 s, a header line a second
        self.assertLess(time.monotonic() - t0, 20)

    def test_an_answer_that_is_not_an_object_raises(self):
        for body in (b"42", b"null", b'"x"', b"[1, 2]", b'{"a": 1}'):
            bad = BadAgent(body=body)
            self.addCleanup(bad.close)
            cluster = Client(api=bad.api, timeout=2)
            msg = "bad answer from agent at " + bad.api
            calls = [cluster.status, cluster.is_leader, cluster.get_leader_info,
                     cluster.members, lambda: cluster.wait_for_leader_change(timeout=1)]
            if body.startswith(b"{"):
                calls = [cluster.members]  # an object where a list belongs
            for call in calls:
                with self.subTest(body=body, call=call):
                    with self.assertRaisesRegex(QClusterError, msg):
                        call()

    def test_address_from_config_environment_or_default(self):
        self.assertEqual("127.0.0.1:8001", Client(identifier="a", listen_port=7001).api)
        self.assertEqual("10.0.0.1:9000",
                         Client(listen_port=7001, api_host="10.0.0.1", api_port=9000).api)
        self.assertEqual("127.0.0.1:7", Client(api="127.0.0.1:7", listen_port=7001).api)
        # a node with api_tls_cert serves HTTPS only
        self.assertEqual("https://127.0.0.1:8001",
                         Client(listen_port=7001, api_tls_cert="c.pem", api_tls_key="k.pem").api)
        self.assertEqual("127.0.0.1", Client(api="https://127.0.0.1:8001").host)
        with self.assertRaises(ValueError):
            Client(listen_port=7001, api_port=0)
        with self.assertRaises(ValueError):
            Client(api="no-port")
        saved = os.environ.get("QCLUSTER_API")
        try:
            os.environ["QCLUSTER_API"] = "127.0.0.2:8123"
            self.assertEqual("127.0.0.2:8123", Client().api)
            del os.environ["QCLUSTER_API"]
            self.assertEqual("127.0.0.1:8001", Client().api)
        finally:
            if saved is not None:
                os.environ["QCLUSTER_API"] = saved
            else:
                os.environ.pop("QCLUSTER_API", None)


if __name__ == "__main__":
    unittest.main()
