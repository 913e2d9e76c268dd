"""The embedded node of the Python package (qcluster.QCluster over
libqcluster): the original README's Bare Minimum program run three times as
three processes, kill -9 of the leader, stop() handing over, bad configs,
callbacks in order, is_leader() while the node's thread is busy, the library
missing, and the aiohttp redirect example across a fail-over. Ports are
bases on 127.0.0.1 reserved by ports.py (free, and taken by no other run at
once); every process started here is ended by its PID.

Run: PYTHONPATH=python python3 -m unittest -v tests/python/test_embedded.py
(with QC_PY_INSTALLED=1 the installed package is used, as
scripts/suite-python.sh does in a venv).
"""

import asyncio
import http.client
import json
import os
import re
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
if not os.environ.get("QC_PY_INSTALLED"):
    sys.path.insert(0, os.path.join(ROOT, "python"))

import qcluster  # noqa: E402
from qcluster import QCluster, QClusterError  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ports  # noqa: E402

EXAMPLES = os.path.join(ROOT, "examples", "python")

def wait_for(fn, timeout=15.0):
    """Polls fn every 20 ms until it returns something truthy; that value,
    or None after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def child_env(**extra):
    env = dict(os.environ)
    if not os.environ.get("QC_PY_INSTALLED"):
        env["PYTHONPATH"] = os.path.join(ROOT, "python")
    env.update(extra)
    return env


def remap(conf, base):
    """conf (an example's config) with port 700N moved to base+N and server
    port 800N to base+20+N, text otherwise unchanged."""
    text = json.dumps(conf)
    text = re.sub(r"\b70(0\d)\b", lambda m: str(base + int(m.group(1))), text)
    text = re.sub(r"\b80(0\d)\b", lambda m: str(base + 20 + int(m.group(1))), text)
    return json.loads(text)


def conf(base, i, n=3, **extra):
    """Node i of n on 127.0.0.1, in the original format."""
    c = {"identifier": "node%d" % i, "listen_host": "127.0.0.1", "listen_port": base + i,
         "peers": [{"host": "127.0.0.1", "port": base + j, "identifier": "node%d" % j,
                    "metadata": {"slot": j}} for j in range(1, n + 1) if j != i],
         "metadata": {"slot": i}}
    c.update(extra)
    return c


class Programs:
    """Example programs, one process each, cwd in a temp dir, their output
    (stdout and stderr) collected line by line."""

    def __init__(self, script, configs, python=sys.executable):
        self.base = ports.reserve()  # released by stop()
        self.dir = tempfile.mkdtemp(prefix="qc-pyemb-")
        self.procs, self.lines, self.paths, self.readers = {}, {}, {}, {}
        for name in configs:
            with open(os.path.join(os.path.dirname(script), name)) as f:
                c = remap(json.load(f), self.base)
            self.paths[c["identifier"]] = os.path.join(self.dir, name)
            with open(self.paths[c["identifier"]], "w") as f:
                json.dump(c, f)
        for ident, path in self.paths.items():
            p = subprocess.Popen([python, script, path], cwd=self.dir, env=child_env(),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
            self.procs[ident] = p
            self.lines[ident] = []
            t = threading.Thread(target=self._read, args=(ident, p), daemon=True)
            t.start()
            self.readers[ident] = t

    def _read(self, ident, p):
        for line in p.stdout:
            self.lines[ident].append(line.decode("utf-8", "replace").rstrip("\n"))

    def kill(self, ident):
        p = self.procs.pop(ident)
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.readers[ident].join(5)  # to the end of its output
        p.stdout.close()

    def stop(self):
        for ident in list(self.procs):
            self.kill(ident)
        self.base.release()
        shutil.rmtree(self.dir, ignore_errors=True)

    def output(self, ident):
        return "\n".join(self.lines[ident])


class BareMinimumTest(unittest.TestCase):
    """examples/python/bare_minimum.py with the original's three configs
    (ports moved), three processes."""

    def setUp(self):
        self.progs = Programs(os.path.join(EXAMPLES, "bare_minimum.py"),
                              ["server_a.json", "server_b.json", "server_c.json"])
        self.addCleanup(self.progs.stop)

    def last_status(self, ident):
        """The program's last verdict: "leader", "follower" or None."""
        for line in reversed(self.progs.lines[ident]):
            if line == "I am the leader!":
                return "leader"
            if line == "I am not the leader :(":
                return "follower"
        return None

    def one_leader(self, idents):
        """The one program of idents whose last verdict is leading while the
        others' last one is following and names it as the leader."""
        leaders = [i for i in idents if self.last_status(i) == "leader"]
        if len(leaders) != 1:
            return None
        for i in idents:
            if i == leaders[0]:
                continue
            if self.last_status(i) != "follower":
                return None
            said = [ln for ln in self.progs.lines[i] if ln.startswith("This is the leader: ")]
            if not said or "identifier='%s'" % leaders[0] not in said[-1]:
                return None
        return leaders[0]

    def test_one_leads_and_kill_9_moves_leadership(self):
        idents = sorted(self.progs.procs)
        first = wait_for(lambda: self.one_leader(idents), 20)
        self.assertIsNotNone(first, "\n".join(self.progs.output(i) for i in idents))
        self.assertIn("{} is doing some work...".format(first), self.progs.output(first))
        self.progs.kill(first)
        rest = [i for i in idents if i != first]
        for i in rest:  # only what they say from now on counts
            self.progs.lines[i].clear()
        second = wait_for(lambda: self.one_leader(rest), 20)
        self.assertIsNotNone(second, "\n".join(self.progs.output(i) for i in rest))
        self.assertNotEqual(first, second)
        for i in rest:
            self.assertIsNone(self.progs.procs[i].poll(), "%s exited" % i)


class InProcessTest(unittest.TestCase):
    """Nodes of one cluster in this process."""

    def setUp(self):
        self.base = ports.reserve()
        self.addCleanup(self.base.release)  # last: after the nodes stopped
        self.dir = tempfile.mkdtemp(prefix="qc-pyemb-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.nodes = []

    def tearDown(self):
        for n in self.nodes:
            n.stop()

    def node(self, i, **extra):
        extra.setdefault("data_dir", os.path.join(self.dir, "node%d" % i))
        n = QCluster(**conf(self.base, i, **extra))
        self.nodes.append(n)
        return n

    def leader_of(self, nodes):
        leaders = [n for n in nodes if n.is_leader()]
        return leaders[0] if len(leaders) == 1 else None

    def test_get_leader_info_is_the_original_peer(self):
        ns = [self.node(i) for i in (1, 2, 3)]
        lead = wait_for(lambda: self.leader_of(ns))
        self.assertIsNotNone(lead)
        for n in ns:
            p = wait_for(n.get_leader_info)
            self.assertEqual(p.identifier, lead.identifier)
            self.assertEqual(p.host, "127.0.0.1")
            self.assertEqual(p.port, self.base + int(lead.identifier[-1]))
            self.assertEqual(p.metadata, {"slot": int(lead.identifier[-1])})
        self.assertEqual(sum(n.is_leader() for n in ns), 1)

    def test_stop_hands_over_and_runs_demoted_then_stop(self):
        ns = [self.node(i) for i in (1, 2, 3)]
        lead = wait_for(lambda: self.leader_of(ns))
        self.assertIsNotNone(lead)
        seen = []
        lead.on("demoted", lambda ev: seen.append(("on_demoted", ev.reason)))
        lead.on("on_stop", lambda ev: seen.append(("on_stop", ev.reason)))
        lead.stop()
        # Both ran before stop() returned (on the callback thread, joined).
        self.assertEqual(seen, [("on_demoted", "shutdown"), ("on_stop", "stopped by the program")])
        self.assertFalse(lead.is_leader())
        self.assertIsNone(lead.get_leader_info())
        rest = [n for n in ns if n is not lead]
        second = wait_for(lambda: self.leader_of(rest))
        self.assertIsNotNone(second)
        self.assertNotEqual(second.identifier, lead.identifier)
        lead.stop()  # idempotent

    def test_callbacks_in_order_in_the_asyncio_loop(self):
        got, tasks = [], []

        async def main():
            loop = asyncio.get_running_loop()
            tid = threading.get_ident()

            def cb(ev):
                got.append((ev.name, threading.get_ident() == tid))

            async def acb(ev):  # a coroutine function runs as a task
                tasks.append((ev.name, threading.get_ident() == tid))

            n = self.node(1, peers=[], on_start=cb, on_elected=cb, on_leader_change=cb)
            n.on("elected", acb)
            for name in ("on_demoted", "on_stop"):
                n.on(name, cb)
            self.assertIs(n._loop, loop)
            leader = await n.wait_for_leader_change(timeout=15)
            self.assertIsNotNone(leader)
            self.assertEqual(leader.identifier, "node1")
            await asyncio.sleep(0.2)  # the task of acb
            await loop.run_in_executor(None, n.stop)
            await asyncio.sleep(0)  # on_stop was queued in this loop

        asyncio.run(main())
        names = [g[0] for g in got]
        self.assertEqual(names, ["on_start", "on_elected", "on_leader_change", "on_demoted",
                                 "on_leader_change", "on_stop"], got)
        self.assertTrue(all(g[1] for g in got), "a callback ran off the loop's thread")
        self.assertEqual(tasks, [("on_elected", True)])

    def test_a_start_that_fails_says_why(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        # as the node binds: an earlier test's connections may linger there
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.base + 1))  # node1's cluster port
        s.listen(1)
        with self.assertRaises(QClusterError) as cm:
            self.node(1, peers=[])
        self.assertIn("cannot start the node: net: cannot listen on 127.0.0.1:%d: "
                      "Address already in use" % (self.base + 1), str(cm.exception))

    def test_callbacks_on_a_thread_without_a_loop(self):
        got = []
        n = self.node(1, peers=[],
                      on_elected=lambda ev: got.append((ev.name, ev.term, threading.get_ident())))
        self.assertTrue(wait_for(lambda: got))
        self.assertEqual(got[0][0], "on_elected")
        self.assertGreaterEqual(got[0][1], 1)
        self.assertNotEqual(got[0][2], threading.get_ident())
        self.assertTrue(n.is_leader())

    def test_wait_returns_a_change_made_since_the_last_answer_at_once(self):
        ns = [self.node(i) for i in (1, 2, 3)]
        lead = wait_for(lambda: self.leader_of(ns))
        self.assertIsNotNone(lead)
        f = next(n for n in ns if n is not lead)
        self.assertEqual(lead.identifier, wait_for(f.get_leader_info).identifier)
        learned = []
        f.on("on_leader_change", lambda ev: learned.append(ev.leader and ev.leader.identifier))
        lead.stop()  # hands over: the change happens between two calls
        rest = [n for n in ns if n is not lead]
        new = wait_for(lambda: self.leader_of(rest))
        self.assertIsNotNone(new)
        self.assertTrue(wait_for(lambda: new.identifier in learned))  # f knows it now
        t0 = time.monotonic()
        got = asyncio.run(f.wait_for_leader_change(timeout=60))
        self.assertLess(time.monotonic() - t0, 30, "the call waited for the next change")
        self.assertEqual(new.identifier, got.identifier)

    def test_wait_for_leader_change_does_not_block_the_loop(self):
        ticks = []

        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)

        async def main():
            n = self.node(1, peers=[{"host": "127.0.0.1", "port": self.base + 2,
                                     "identifier": "node2"}])
            t = asyncio.ensure_future(ticker())
            # Two voters, one running: no leader can be elected.
            self.assertIsNone(await n.wait_for_leader_change(timeout=0.5))
            t.cancel()
            return n

        asyncio.run(main())
        self.assertGreater(len(ticks), 5, "the loop did not run while waiting")

    def test_blocked_callback_does_not_stall_the_node(self):
        release = threading.Event()
        entered = threading.Event()

        def slow(ev):
            entered.set()
            release.wait(30)

        ns = [self.node(1, on_elected=slow), self.node(2, on_elected=slow),
              self.node(3, on_elected=slow)]
        self.addCleanup(release.set)
        self.assertTrue(entered.wait(15))
        lead = wait_for(lambda: self.leader_of(ns))
        self.assertIsNotNone(lead)
        # Many election timeouts (300 ms) with the callback blocked: the
        # leader keeps its lease and nobody else is elected.
        for _ in range(20):
            time.sleep(0.1)
            self.assertTrue(lead.is_leader())
            self.assertEqual(lead.get_leader_info().identifier, lead.identifier)
            self.assertEqual([n for n in ns if n.is_leader()], [lead])
        release.set()

    def test_is_leader_answers_while_a_hook_holds_the_node_thread(self):
        busy, done = os.path.join(self.dir, "busy"), os.path.join(self.dir, "done")
        hooks = os.path.join(self.dir, "hooks.lua")
        with open(hooks, "w") as f:
            f.write("""
local hooks = {}
function hooks.on_elected()
  io.open(%r, "w"):close()
  local t = os.time() + 3
  while os.time() < t do end
  io.open(%r, "w"):close()
end
return hooks
""" % (busy, done))
        n = self.node(1, peers=[], hooks=hooks, hook_timeout_ms=20000)
        self.assertTrue(wait_for(lambda: os.path.exists(busy)))
        answers = [(n.is_leader(), n.get_leader_info()) for _ in range(100)]
        self.assertFalse(os.path.exists(done), "is_leader() waited for the hook")
        self.assertTrue(all(isinstance(a, bool) for a, _ in answers))
        self.assertTrue(wait_for(lambda: os.path.exists(done), 20))
        self.assertTrue(wait_for(n.is_leader))


class BadConfigTest(unittest.TestCase):
    def setUp(self):
        self.base = ports.reserve()
        self.addCleanup(self.base.release)  # last: after the nodes stopped
        self.dir = tempfile.mkdtemp(prefix="qc-pyemb-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def assertRaisesNaming(self, key, text, **kw):
        with self.assertRaises(QClusterError) as cm:
            QCluster(**kw)
        msg = str(cm.exception)
        self.assertTrue(msg.startswith(key + ":"), msg)
        self.assertIn(text, msg)

    def test_bad_configs_name_the_key(self):
        good = conf(self.base, 1, data_dir=self.dir)
        self.assertRaisesNaming("bogus", "unknown key", bogus=1, **good)
        self.assertRaisesNaming("identifier", "got nothing",
                                **{k: v for k, v in good.items() if k != "identifier"})
        self.assertRaisesNaming("listen_port", "expected an integer",
                                **dict(good, listen_port="x"))
        self.assertRaisesNaming("peers[1].x", "unknown key",
                                **dict(good, peers=[dict(good["peers"][0], x=1)]))
        self.assertRaisesNaming("metadata", "not a config value",
                                **dict(good, metadata={"f": object()}))
        self.assertRaisesNaming("api", "qcluster.Client", api="127.0.0.1:8001")
        self.assertRaisesNaming("on_nothing", "not a config value",
                                **dict(good, on_nothing=lambda ev: None))
        # After all that, a good config runs.
        with QCluster(**dict(good, peers=[])) as n:
            with self.assertRaises(QClusterError) as cm:
                n.on("nothing", print)
            self.assertIn("nothing: no such event", str(cm.exception))
            self.assertTrue(wait_for(n.is_leader))
        self.assertFalse(n.is_leader())


class PortsTest(unittest.TestCase):
    """ports.reserve(): two runs at once used to take their bases from one
    fixed list, and a node of one failed to start on a port of the other's
    ("Address already in use"). A base another run holds, or one with a
    port bound, is never handed out."""

    def test_a_held_or_bound_base_is_skipped(self):
        held = [ports.reserve() for _ in range(3)]
        for b in held:
            self.addCleanup(b.release)
        x, y, z = (int(b) for b in held)
        # x stays held (its lock file taken, as by another run); y is free of
        # locks but a port of it is bound; z is free.
        held[1].release()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", y + 21))
        s.listen(1)
        held[2].release()
        got = ports.reserve([x, y, z])
        self.addCleanup(got.release)
        self.assertEqual(z, got)
        with self.assertRaises(RuntimeError):
            ports.reserve([x, y, z])  # z is held now too


class LibraryMissingTest(unittest.TestCase):
    SCRIPT = ("import qcluster\n"
              "try:\n"
              "    qcluster.QCluster(identifier='a', listen_host='127.0.0.1', listen_port=1)\n"
              "except qcluster.QClusterError as e:\n"
              "    print('QClusterError:', e)\n")

    def run_script(self, pythonpath, **env):
        e = child_env(**env)
        e["PYTHONPATH"] = pythonpath
        e["PYTHONDONTWRITEBYTECODE"] = "1"
        return subprocess.run([sys.executable, "-c", self.SCRIPT], env=e, cwd=pythonpath,
                              capture_output=True, text=True, timeout=30)

    def test_qcluster_lib_pointing_nowhere(self):
        pkg = os.path.dirname(os.path.dirname(qcluster.__file__))
        r = self.run_script(pkg, QCLUSTER_LIB="/nonexistent/libqcluster.so.0")
        self.assertIn("QClusterError: QCLUSTER_LIB=/nonexistent/libqcluster.so.0", r.stdout,
                      r.stdout + r.stderr)

    def test_no_build_dir_and_none_installed(self):
        # Asked in a fresh process: this one has loaded it from build/.
        r = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL('libqcluster.so.0')"],
                           capture_output=True, timeout=30)
        if r.returncode == 0:
            self.skipTest("libqcluster.so.0 is installed on this system")
        d = tempfile.mkdtemp(prefix="qc-pylib-")
        self.addCleanup(shutil.rmtree, d, True)
        shutil.copytree(os.path.dirname(qcluster.__file__), os.path.join(d, "qcluster"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        env = child_env()
        env.pop("QCLUSTER_LIB", None)
        r = self.run_script(d, QCLUSTER_LIB="")
        out = r.stdout
        self.assertIn("QClusterError: libqcluster not found", out, out + r.stderr)
        for hint in ("make install", "QCLUSTER_LIB", "PYTHONPATH=python", "qcluster.Client"):
            self.assertIn(hint, out)
        # The HTTP client needs no library.
        r = subprocess.run([sys.executable, "-c", "import qcluster; "
                            "print(qcluster.Client(api='127.0.0.1:1').api)"],
                           env=dict(env, PYTHONPATH=d, QCLUSTER_LIB=""), cwd=d,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.stdout.strip(), "127.0.0.1:1", r.stderr)


def http_get(port, path="/hello"):
    """(status, Location, body) of GET path on localhost:port; None when it
    cannot be asked."""
    try:
        c = http.client.HTTPConnection("localhost", port, timeout=2)
        c.request("GET", path)
        r = c.getresponse()
        out = (r.status, r.getheader("Location"), r.read().decode())
        c.close()
        return out
    except OSError:
        return None


class RedirectExampleTest(unittest.TestCase):
    """examples/python/redirect/server.py: three aiohttp services; followers
    redirect to the leader's metadata.server_port, across a kill -9."""

    def setUp(self):
        try:
            import aiohttp
            del aiohttp
        except ImportError:
            self.skipTest("aiohttp missing (Debian python3-aiohttp, /usr/bin/python3)")
        self.progs = Programs(os.path.join(EXAMPLES, "redirect", "server.py"),
                              ["server_a.json", "server_b.json", "server_c.json"])
        self.addCleanup(self.progs.stop)
        self.ports = {}
        for ident, path in self.progs.paths.items():
            with open(path) as f:
                self.ports[ident] = json.load(f)["metadata"]["server_port"]

    def serving(self, idents):
        """The one service that serves while the others redirect to it."""
        answers = {i: http_get(self.ports[i]) for i in idents}
        leaders = [i for i, a in answers.items() if a and a[0] == 200]
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        if answers[lead][2] != "{} served /hello\n".format(lead):
            return None
        want = "http://localhost:{}/hello".format(self.ports[lead])
        for i, a in answers.items():
            if i != lead and (not a or a[0] != 307 or a[1] != want):
                return None
        return lead

    def test_followers_redirect_to_the_leader_across_a_fail_over(self):
        idents = sorted(self.progs.procs)
        first = wait_for(lambda: self.serving(idents), 20)
        self.assertIsNotNone(first, "\n".join(self.progs.output(i) for i in idents))
        self.progs.kill(first)
        rest = [i for i in idents if i != first]
        second = wait_for(lambda: self.serving(rest), 20)
        self.assertIsNotNone(second, "\n".join(self.progs.output(i) for i in rest))
        self.assertNotEqual(first, second)
        self.assertIn("{}: elected in term".format(second), self.progs.output(second))


if __name__ == "__main__":
    unittest.main()
