"""Cluster port bases for the Python tests (test_client.py, test_embedded.py).

A base B gives a cluster its ports B+1..B+49 on 127.0.0.1 (cluster ports
B+i, APIs B+20+i, services B+40+i). Runs of these tests at once on one
machine (two worktrees, a clean-clone `make test` beside a developer's run)
used to shuffle one fixed list each, so one run's node found its port bound
by the other's: "cannot listen on 127.0.0.1:32501: Address already in use",
and the start failed with QC_EIO. Now a base is handed out only while this
process holds its lock file (an flock, released by release() or when the
process ends, however it ends) and while none of its ports is bound (a
busted spec, anything else). The bases lie below the ephemeral range
(32768+), where outbound sockets would take the ports, and above the busted
specs' (tests/helpers/agents.lua, up to 31559).
"""

import fcntl
import os
import random
import socket
import tempfile

FIRST, LAST, STEP = 31600, 32700, 50
LOCK_DIR = os.path.join(tempfile.gettempdir(), "qcluster-test-ports")


def _free(base):
    """True when nothing is bound to base+1..base+49 of 127.0.0.1 (a probe
    with SO_REUSEADDR, as the node binds: connections that linger in
    TIME_WAIT do not count)."""
    for port in range(base + 1, base + STEP):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


class Base(int):
    """A reserved base: an int, with release()."""

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # the flock goes with the descriptor
            self._fd = None


def _try(base):
    """A Base for base when its lock is free and its ports are, else None."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    fd = os.open(os.path.join(LOCK_DIR, "%d.lock" % base), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if not _free(base):
        os.close(fd)
        return None
    b = Base(base)
    b._fd = fd
    return b


def reserve(bases=None):
    """A free base (of bases, else of FIRST..LAST), reserved until its
    release() or the end of the process. Raises RuntimeError when every base
    is taken."""
    if bases is None:
        bases = list(range(FIRST, LAST, STEP))
        random.Random(os.getpid()).shuffle(bases)  # runs at once start apart
    for base in bases:
        b = _try(base)
        if b is not None:
            return b
    raise RuntimeError("no free cluster port base")
