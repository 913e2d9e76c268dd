"""Finds and loads libqcluster.so.0 for the embedded node (qcluster.QCluster)
and declares the C functions it uses (include/qcluster.h). Loaded on first
use only, so qcluster.Client works where the library is not installed.
"""

import ctypes
import ctypes.util
import os
import threading
from typing import List, Optional

from ._client import QClusterError

SONAME = "libqcluster.so.0"
ENV = "QCLUSTER_LIB"

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None


class CPeer(ctypes.Structure):
    """struct qc_peer."""
    _fields_ = [("identifier", ctypes.c_char_p), ("host", ctypes.c_char_p),
                ("port", ctypes.c_int), ("metadata", ctypes.c_char_p),
                ("role", ctypes.c_char_p), ("up", ctypes.c_int), ("voter", ctypes.c_int),
                ("priority", ctypes.c_int), ("healthy", ctypes.c_int)]


class CEvent(ctypes.Structure):
    """struct qc_event."""
    _fields_ = [("name", ctypes.c_char_p), ("term", ctypes.c_uint64),
                ("reason", ctypes.c_char_p), ("self", ctypes.POINTER(CPeer)),
                ("leader", ctypes.POINTER(CPeer)), ("previous_leader", ctypes.POINTER(CPeer)),
                ("peer", ctypes.POINTER(CPeer)), ("key", ctypes.c_void_p),
                ("klen", ctypes.c_size_t), ("value", ctypes.c_void_p), ("vlen", ctypes.c_size_t),
                ("revision", ctypes.c_uint64), ("healthy", ctypes.c_int),
                ("check", ctypes.c_char_p), ("status", ctypes.c_char_p),
                ("output", ctypes.c_char_p)]


# void qc_event_fn(qc_node *node, const qc_event *ev, void *arg)
EVENT_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(CEvent), ctypes.c_void_p)


def candidates() -> List[str]:
    """Where the library is looked for after $QCLUSTER_LIB, in order: the
    source tree's build/ (this package run from python/ with
    PYTHONPATH=python), the lib/ of a `make install` prefix (the package in
    PREFIX/lib/python3*/dist-packages), then the system's search path."""
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.normpath(os.path.join(here, "..", "..", "build", SONAME))
    prefix = os.path.normpath(os.path.join(here, "..", "..", "..", SONAME))
    found = ctypes.util.find_library("qcluster")
    return [tree, prefix, SONAME] + ([found] if found and found != SONAME else [])


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    sigs = {
        "qc_strerror": (cp, [ctypes.c_int]),
        "qc_settings_new": (vp, []),
        "qc_settings_free": (None, [vp]),
        "qc_settings_set_json": (ctypes.c_int, [vp, cp, cp]),
        "qc_node_new_settings": (ctypes.c_int, [vp, ctypes.POINTER(vp), cp, ctypes.c_size_t]),
        "qc_node_on": (ctypes.c_int, [vp, cp, EVENT_FN, vp]),
        "qc_node_start_thread": (ctypes.c_int, [vp]),
        "qc_node_error": (cp, [vp]),
        "qc_is_leader": (ctypes.c_int, [vp]),
        "qc_get_leader_info": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.POINTER(CPeer))]),
        "qc_peer_free": (None, [ctypes.POINTER(CPeer)]),
        "qc_node_stop": (ctypes.c_int, [vp]),
        "qc_node_free": (None, [vp]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


def load() -> ctypes.CDLL:
    """The library (loaded once); QClusterError saying what to build,
    install or set when it cannot be found or loaded."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        path = os.environ.get(ENV)
        if path:
            try:
                _lib = _declare(ctypes.CDLL(path))
            except (OSError, AttributeError) as e:
                raise QClusterError("{}={}: cannot load libqcluster: {} (point it at "
                                    "build/{} of a QCluster build, or unset it)"
                                    .format(ENV, path, e, SONAME)) from e
            return _lib
        tried = []
        for c in candidates():
            if os.sep in c and not os.path.exists(c):
                tried.append(c)
                continue
            try:
                _lib = _declare(ctypes.CDLL(c))
                return _lib
            except (OSError, AttributeError) as e:
                tried.append("{} ({})".format(c, e))
        raise QClusterError(
            "libqcluster not found (tried {}): an embedded node needs the QCluster C library. "
            "Run `make` in the QCluster source tree and use PYTHONPATH=python, or "
            "`make install` (then `ldconfig`), or set {} to the path of {}; "
            "qcluster.Client(api=...) asks a separately run agent without it"
            .format(", ".join(tried), ENV, SONAME))
