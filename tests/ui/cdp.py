#!/usr/bin/python3
"""Evaluates one JavaScript expression in a page of a running Chromium over
the DevTools protocol and prints its value as JSON: the status page spec's
window into the page. Stateless, so the page lives on between calls.
Uses Debian's python3-websocket (websocket-client); run it with /usr/bin/python3.

usage: cdp.py WEBSOCKET_URL EXPRESSION   (exit 0 and the value; 1 on error)
"""
import json
import sys

import websocket


def evaluate(url, expression):
    # suppress_origin: Chromium refuses DevTools sockets from an origin it was not told of.
    ws = websocket.create_connection(url, timeout=10, suppress_origin=True)
    try:
        ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate",
                            "params": {"expression": expression, "returnByValue": True,
                                       "awaitPromise": True}}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == 1:
                break
    finally:
        ws.close()
    if "error" in msg:
        raise RuntimeError(msg["error"].get("message", "protocol error"))
    result = msg["result"]
    if "exceptionDetails" in result:
        raise RuntimeError(result["exceptionDetails"].get("text", "exception"))
    return result["result"].get("value")


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        value = evaluate(argv[1], argv[2])
    except Exception as err:  # any failure is reported the same way to the spec
        print(f"cdp: {err}", file=sys.stderr)
        return 1
    print(json.dumps(value))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
