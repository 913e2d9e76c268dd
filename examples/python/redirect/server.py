"""A web service run on three machines of which only the leader serves:
each program is a QCluster peer (QCluster(**conf)) and an aiohttp server on
its metadata.server_port; a follower answers every request with a redirect
to the leader's server_port, so clients that follow redirects always reach
the leader, across fail-overs. The leader's work starts and stops with the
on_elected and on_demoted callbacks, run in this program's asyncio loop.

    /usr/bin/python3 server.py server_a.json    (and server_b, server_c)
    curl -L http://localhost:8002/hello

Needs aiohttp (Debian: python3-aiohttp, with /usr/bin/python3).
"""

import asyncio
import json
import logging
import sys

from aiohttp import web

from qcluster import Event, QCluster

log = logging.getLogger("redirect")


class Service:
    def __init__(self, conf: dict) -> None:
        self.identifier = conf["identifier"]
        self.port = conf["metadata"]["server_port"]
        self.cluster = QCluster(**conf, on_elected=self.elected, on_demoted=self.demoted)

    def elected(self, ev: Event) -> None:
        log.info("%s: elected in term %d, serving", self.identifier, ev.term)

    def demoted(self, ev: Event) -> None:
        log.info("%s: demoted (%s), redirecting", self.identifier, ev.reason)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.cluster.is_leader():
            return web.Response(text="{} served {}\n".format(self.identifier, request.path_qs))
        leader = self.cluster.get_leader_info()
        port = leader.metadata.get("server_port") if leader else None
        if port is None:
            # No leader right now (an election is under way): come back.
            return web.Response(status=503, headers={"Retry-After": "1"},
                                text="no leader\n")
        raise web.HTTPTemporaryRedirect("http://{}:{}{}".format(leader.host, port,
                                                                request.path_qs))


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with open(sys.argv[1]) as f:
        conf = json.load(f)
    service = Service(conf)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, conf["listen_host"], service.port).start()
    log.info("%s: serving on port %d", service.identifier, service.port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        service.cluster.stop()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
