"""QCluster for Python: `QCluster(**configuration)` makes this program a
peer of the cluster, as in the original QCluster (a node of libqcluster on a
thread of its own; is_leader() and get_leader_info() answer from memory);
`Client(api="HOST:PORT")` asks a separately run agent over its HTTP API.
"""

from ._client import Client, Peer, QClusterError
from ._node import EVENTS, Event, QCluster

__all__ = ["QCluster", "Client", "Peer", "Event", "EVENTS", "QClusterError"]
__version__ = "0.1.0"
