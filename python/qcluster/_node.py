"""qcluster.QCluster: a QCluster node inside this Python process, as in the
original QCluster (the program is the peer): libqcluster's node on a thread
of its own (qc_node_start_thread), asked from memory by is_leader() and
get_leader_info(). Hook events reach Python callbacks through one C callback
that only queues them (into the program's asyncio loop or a dispatcher
thread): Python code never runs on the node's thread, so a slow callback
cannot stall consensus.
"""

import asyncio
import atexit
import ctypes
import json
import logging
import os
import queue
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import _lib
from ._client import Peer, QClusterError

__all__ = ["QCluster", "Event", "EVENTS"]

log = logging.getLogger("qcluster")

#: The hook events a callback can be registered for (README "Hooks").
EVENTS = ("on_start", "on_elected", "on_demoted", "on_leader_change", "on_peer_up",
          "on_peer_down", "on_stop", "on_kv_change", "on_member_join", "on_member_leave",
          "on_health_change")

# Arguments of the Client, not config keys: named in the error so that a
# program of the HTTP era learns where they went.
_CLIENT_ARGS = ("api", "token", "timeout")


def _text(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else b.decode("utf-8", "replace")


def _peer(p: "ctypes._Pointer[_lib.CPeer]") -> Optional[Peer]:
    """A Peer copied out of a qc_peer (NULL: None)."""
    if not p:
        return None
    c = p.contents
    try:
        metadata = json.loads(c.metadata) if c.metadata else {}
    except ValueError:
        metadata = {}
    return Peer(_text(c.identifier), _text(c.host), c.port, metadata, role=_text(c.role),
                up=bool(c.up), voter=bool(c.voter), priority=c.priority,
                healthy=bool(c.healthy))


class Event:
    """One hook event, with the fields of the Lua hook's argument (README
    "Hooks"): name ("on_elected", ...), term, reason, self, leader,
    previous_leader, peer (Peers or None), key and value (bytes, for
    on_kv_change; value None for a delete), revision, and for
    on_health_change healthy, check, status and output."""

    __slots__ = ("name", "term", "reason", "self", "leader", "previous_leader", "peer",
                 "key", "value", "revision", "healthy", "check", "status", "output")

    def __init__(self, c: "_lib.CEvent") -> None:
        self.name: str = _text(c.name) or ""
        self.term: int = c.term
        self.reason: Optional[str] = _text(c.reason)
        self.self: Optional[Peer] = _peer(c.self)
        self.leader: Optional[Peer] = _peer(c.leader)
        self.previous_leader: Optional[Peer] = _peer(c.previous_leader)
        self.peer: Optional[Peer] = _peer(c.peer)
        self.key: Optional[bytes] = ctypes.string_at(c.key, c.klen) if c.key else None
        self.value: Optional[bytes] = ctypes.string_at(c.value, c.vlen) if c.value else None
        self.revision: int = c.revision
        self.check: Optional[str] = _text(c.check)
        self.status: Optional[str] = _text(c.status)
        self.output: Optional[str] = _text(c.output)
        self.healthy: Optional[bool] = bool(c.healthy) if self.check is not None else None

    def __repr__(self) -> str:
        return "Event(name={!r}, term={!r}, reason={!r}, leader={!r})".format(
            self.name, self.term, self.reason, self.leader)


def _event_name(name: str) -> str:
    full = name if name.startswith("on_") else "on_" + name
    if full not in EVENTS:
        raise QClusterError("{}: no such event (one of {})".format(name, ", ".join(EVENTS)))
    return full


# Every node not yet stopped: kept alive (a program that drops its QCluster
# stays a peer, as in the original) and stopped at interpreter exit.
_live: Set["QCluster"] = set()
_live_lock = threading.Lock()


def _stop_all() -> None:
    with _live_lock:
        nodes = list(_live)
    for n in nodes:
        n.stop()


def _after_fork_in_child() -> None:
    # The child has the parent's memory but not its node thread: its copies
    # must never be stopped or freed (that would join a thread it lacks).
    with _live_lock:
        for n in _live:
            n._forked = True
        _live.clear()


atexit.register(_stop_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


class QCluster:
    """A QCluster peer run by this program.

    QCluster(**configuration) takes the original QCluster's configuration
    (identifier, listen_host, listen_port, peers with host, port,
    identifier and metadata) or any key of a QCluster config file (hooks,
    data_dir, secret, checks, ...), checks it as `qcluster check` would
    (QClusterError naming the key) and starts the node on a thread of its
    own. It serves the HTTP API only when api_port is given; data_dir
    defaults to qcluster-data/<identifier> under the working directory.

    Keyword arguments named after a hook event (on_elected=fn, ...) register
    callbacks, as on() does; loop= names the asyncio loop they run in
    (default: the loop running at construction, else a thread of their
    own). The node ends with the process; stop() (also `with`, and at
    interpreter exit) hands leadership over first.
    """

    def __init__(self, loop: Optional[asyncio.AbstractEventLoop] = None,
                 **conf: Any) -> None:
        self._forked = False
        self._node: Optional[int] = None
        self._lock = threading.Lock()
        # Held while a call is inside the C node, and by stop() to free it:
        # a call from another thread never runs on a freed node.
        self._use = threading.Lock()
        self._callbacks: Dict[str, List[Callable[[Event], Any]]] = {}
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]] = []
        # The leader last returned (1-tuple; None inside: no leader), which
        # wait_for_leader_change waits to see differ; None: nothing yet.
        self._known: Optional[Tuple[Optional[str]]] = None
        self._changes = 0
        self._queue: "queue.SimpleQueue[Optional[Tuple[Callable[[Event], Any], Event]]]" = \
            queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop
        for key in [k for k in conf if k in EVENTS and callable(conf[k])]:
            self.on(key, conf.pop(key))
        for key in _CLIENT_ARGS:
            if key in conf:
                raise QClusterError(
                    "{}: unknown key (QCluster runs a node in this program, from its config; "
                    "to ask a separately run agent use qcluster.Client({}=...))".format(key, key))
        conf.setdefault("api_port", 0)
        self.identifier: Optional[str] = conf.get("identifier")
        lib = _lib.load()
        self._lib = lib
        # Kept referenced as long as the node may call it.
        self._c_event = _lib.EVENT_FN(self._on_c_event)
        node = self._create(lib, conf)
        rc = lib.qc_node_on(node, None, self._c_event, None)
        if rc == 0:
            rc = lib.qc_node_start_thread(node)
        if rc != 0:
            # What the node logged: a port in use, a data_dir another node
            # holds, ... (read before the node is freed)
            why = _text(lib.qc_node_error(node) or lib.qc_strerror(rc))
            lib.qc_node_free(node)
            raise QClusterError("cannot start the node: {}".format(why))
        self._node = node
        with _live_lock:
            _live.add(self)

    @staticmethod
    def _create(lib: ctypes.CDLL, conf: Dict[str, Any]) -> int:
        s = lib.qc_settings_new()
        if not s:
            raise MemoryError()
        try:
            for key, value in conf.items():
                try:
                    text = json.dumps(value, allow_nan=False)
                except (TypeError, ValueError) as e:
                    raise QClusterError("{}: not a config value ({})".format(key, e)) from None
                try:
                    ckey, ctext = key.encode("utf-8"), text.encode("utf-8")
                except UnicodeError:
                    raise QClusterError("{!r}: not UTF-8".format(key)) from None
                rc = lib.qc_settings_set_json(s, ckey, ctext)
                if rc != 0:
                    raise QClusterError("{}: {}".format(key, _text(lib.qc_strerror(rc))))
            node = ctypes.c_void_p()
            err = ctypes.create_string_buffer(1024)
            rc = lib.qc_node_new_settings(s, ctypes.byref(node), err, len(err))
            if rc != 0:
                msg = _text(err.value) or _text(lib.qc_strerror(rc)) or ""
                if msg.startswith("settings: "):
                    msg = msg[len("settings: "):]
                raise QClusterError(msg)
            return node.value
        finally:
            lib.qc_settings_free(s)

    # ---- the original SDK ------------------------------------------------

    def is_leader(self) -> bool:
        """Used to determine if the current peer is the leader of the
        cluster. Answers from the node's memory (no I/O); False once
        stopped."""
        with self._use:
            node = self._node
            return bool(node) and bool(self._lib.qc_is_leader(node))

    def get_leader_info(self) -> Optional[Peer]:
        """Used to get more detailed information about the known elected
        leader. If no leader is elected (in cases where a majority vote is
        impossible to achieve), this will return None.

        The leader is returned in a Peer object with host and port (where
        it takes QCluster communication), identifier (its unique string
        identifier) and metadata (a dictionary supplied by the
        configuration); QCluster adds role, up, voter, priority, healthy."""
        p = self._leader_now()
        self._known = (p.identifier if p else None,)
        return p

    def _leader_now(self) -> Optional[Peer]:
        out = ctypes.POINTER(_lib.CPeer)()
        with self._use:
            node = self._node
            if not node or self._lib.qc_get_leader_info(node, ctypes.byref(out)) != 0:
                return None
        try:
            return _peer(out)
        finally:
            self._lib.qc_peer_free(out)

    async def wait_for_leader_change(self, timeout: Optional[float] = None) -> Optional[Peer]:
        """Waits, without blocking the asyncio loop, until the leader this
        node knows differs from the one this QCluster last returned
        (get_leader_info() or a wait; on the first call, the leader now),
        or for timeout seconds (None: no limit) or for the node to stop;
        then answers as get_leader_info(). A loop of calls never misses a
        change: after None, a leader elected meanwhile comes back at once."""
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[None]" = loop.create_future()
        with self._lock:
            running = self._node is not None
            if running:
                self._waiters.append((loop, fut))
        # Compared after the waiter is in: a change from here on wakes it.
        p = self._leader_now()
        if self._known is None:
            self._known = (p.identifier if p else None,)
        try:
            if running and self._known == (p.identifier if p else None,):
                await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                if (loop, fut) in self._waiters:
                    self._waiters.remove((loop, fut))
        return self.get_leader_info()

    # ---- callbacks -----------------------------------------------------

    def on(self, event: str, fn: Callable[[Event], Any]) -> None:
        """Calls fn(event) for each hook event named event ("elected" or
        "on_elected", ...; README "Hooks"), the same events the Lua hooks
        get from the same ordered queue, in order, in the asyncio loop of
        this QCluster (loop.call_soon_threadsafe) or else on a thread of
        its own. A coroutine function's coroutine is run as a task of that
        loop. Exceptions are logged to the "qcluster" logger."""
        name = _event_name(event)
        if not callable(fn):
            raise QClusterError("{}: callback is not callable".format(event))
        with self._lock:
            self._callbacks.setdefault(name, []).append(fn)

    def _on_c_event(self, node: int, ev: Any, arg: Any) -> None:
        """The node's thread, GIL held by ctypes: copies the event and
        queues it; never runs user code, never blocks."""
        try:
            e = Event(ev.contents)
            with self._lock:
                fns = list(self._callbacks.get(e.name, ()))
                waiters: List[Tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]] = []
                if e.name in ("on_leader_change", "on_stop"):
                    waiters, self._waiters = self._waiters, []
            for loop, fut in waiters:
                try:
                    loop.call_soon_threadsafe(_wake, fut)
                except RuntimeError:
                    pass  # that loop is closed: nobody waits there any more
            for fn in fns:
                self._deliver(fn, e)
        except BaseException:  # an exception must not cross into C
            log.exception("qcluster: event dropped")

    def _deliver(self, fn: Callable[[Event], Any], e: Event) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._run, fn, e)
                return
            except RuntimeError:
                # The program's loop is closed (asyncio.run returned): the
                # events of the stop at exit go to the thread instead.
                self._loop = None
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, daemon=True,
                                                name="qcluster-callbacks")
                self._thread.start()
        self._queue.put((fn, e))

    def _run(self, fn: Callable[[Event], Any], e: Event) -> None:
        try:
            r = fn(e)
            if asyncio.iscoroutine(r):
                if self._loop is not None:
                    self._loop.create_task(r)
                else:
                    asyncio.run(r)
        except Exception:
            log.exception("qcluster: %s callback failed", e.name)

    def _dispatch(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._run(*item)

    # ---- life cycle --------------------------------------------------------

    def stop(self) -> None:
        """Stops the node: a leader hands over first, on_stop runs last;
        returns once stopped, with the callbacks of its events run (or, in
        an asyncio loop, queued there). Idempotent."""
        with self._lock:
            node, self._node = self._node, None
        if not node or self._forked:
            return
        with _live_lock:
            _live.discard(self)
        self._lib.qc_node_stop(node)
        with self._use:
            self._lib.qc_node_free(node)
        with self._lock:
            t = self._thread
        if t is not None and t is not threading.current_thread():
            self._queue.put(None)
            t.join()
            with self._lock:
                self._thread = None

    def __enter__(self) -> "QCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "QCluster":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __repr__(self) -> str:
        return "QCluster(identifier={!r}, running={})".format(self.identifier,
                                                              self._node is not None)


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)
