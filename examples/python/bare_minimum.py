# The original QCluster README's "Bare Minimum" program, unchanged but for
# the three lines marked "added": the README's version uses a `logger` it
# never defines (a NameError on its first iteration), so every real program
# of it had these. Run it three times: python3 bare_minimum.py server_a.json
# (and server_b.json, server_c.json); one of them leads.
import logging  # added
from qcluster import QCluster
import asyncio
import sys
import json

logging.basicConfig(level=logging.INFO, format="%(message)s")  # added
logger = logging.getLogger(__name__)  # added


async def main():
    conf_file = sys.argv[1]
    with open(conf_file) as f:
        conf = json.load(f)

    identifier = conf['identifier']
    cluster = QCluster(**conf)
    while True:
        if cluster.is_leader():
            logger.info("I am the leader!")
            logger.info("{} is doing some work...".format(identifier))
        else:
            logger.info("I am not the leader :(")
            logger.info("This is the leader: {}".format(cluster.get_leader_info()))
        await asyncio.sleep(1)

if __name__ == "__main__":
    asyncio.run(main())
