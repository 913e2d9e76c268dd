#!/usr/bin/python3
"""Evaluates one JavaScript expression in a page of a running Chromium over
the DevTools protocol and prints its value as JSON: the status page spec's
window into the page. Stateless, so the page lives on between calls.
Uses Debian's python3-websocket (websocket-client); run it with /usr/bin/python3.

With --png, takes a screenshot of the part of the page that EXPRESSION
gives ({x, y, width, height} in page pixels), writes it to FILE and prints
the [r, g, b] of each POINT ([[x, y], ...] relative to that part).

usage: cdp.py WEBSOCKET_URL [--png FILE] EXPRESSION [POINTS]   (exit 0; 1 on error)
"""
import base64
import json
import struct
import sys
import zlib

import websocket


def call(url, method, params):
    # suppress_origin: Chromium refuses DevTools sockets from an origin it was not told of.
    ws = websocket.create_connection(url, timeout=10, suppress_origin=True)
    try:
        ws.send(json.dumps({"id": 1, "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == 1:
                break
    finally:
        ws.close()
    if "error" in msg:
        raise RuntimeError(msg["error"].get("message", "protocol error"))
    return msg["result"]


def evaluate(url, expression):
    result = call(url, "Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                            "awaitPromise": True})
    if "exceptionDetails" in result:
        raise RuntimeError(result["exceptionDetails"].get("text", "exception"))
    return result["result"].get("value")


def png_rows(data):
    """The rows of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium
    writes) as lists of (r, g, b)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError("not a PNG")
    pos, idat, head = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, ctype, _, _, interlace = head
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise RuntimeError("unexpected PNG format %r" % (head,))
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, rows = zlib.decompress(idat), width * bpp, None, []
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i] if prev else 0
            c = prev[i - bpp] if prev and i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
    return rows


def screenshot(url, path, clip_expr, points):
    clip = evaluate(url, clip_expr)
    shot = call(url, "Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": clip["x"], "y": clip["y"], "width": clip["width"],
                 "height": clip["height"], "scale": 1}})
    data = base64.b64decode(shot["data"])
    with open(path, "wb") as f:
        f.write(data)
    rows = png_rows(data)
    return {"width": len(rows[0]), "height": len(rows),
            "points": [list(rows[int(y)][int(x)]) for x, y in points]}


def main(argv):
    if len(argv) >= 5 and argv[2] == "--png":
        try:
            value = screenshot(argv[1], argv[3], argv[4], json.loads(argv[5]) if len(argv) > 5 else [])
        except Exception as err:  # any failure is reported the same way to the spec
            print(f"cdp: {err}", file=sys.stderr)
            return 1
        print(json.dumps(value))
        return 0
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
