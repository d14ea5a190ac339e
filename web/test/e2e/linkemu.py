#!/usr/bin/env python3
"""linkemu.py: a user-space link emulator for web/test/e2e/badnet.e2e.mjs.

This machine's kernel has no netem qdisc, so the test cannot use `tc netem`. This program joins
two TAP devices (`linkemu.py TAP_A TAP_B`) and forwards every Ethernet frame between them with a
fixed one-way delay, random loss (UDP only, so ARP and the signalling's TCP stay usable), and an
optional rate cap with a tail-drop queue, the same in both directions. The test moves one TAP
into Chromium's network namespace. Settings come as JSON lines on stdin:
  {"delay_ms": 50, "loss": 0.03, "rate_kbps": 2000, "queue_ms": 150}   (0 / absent = off)
  {"stats": true}   -> prints {"forwarded": n, "lost": n, "queue_drops": n, "at": seconds,
                        "a_to_b": {...}, "b_to_a": {...}}, where each direction has
                        "bytes" (Ethernet frames forwarded), "shaped" (frames that waited for the
                        capped wire) and "max_wait_ms" (longest such wait since the last stats)
It prints "ready" once both TAP devices exist. The devices go away when it exits. Test code only.
"""

import fcntl
import heapq
import json
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def is_udp(frame):
    # Ethernet II, IPv4 (0x0800), protocol 17.
    return len(frame) > 23 and frame[12:14] == b"\x08\x00" and frame[23] == 17


class Direction:
    def __init__(self):
        self.busy_until = 0.0  # when the (emulated) wire finishes sending what is queued
        self.bytes = 0  # forwarded (written to the other side)
        self.shaped = 0  # frames that had to wait for the capped wire
        self.max_wait = 0.0  # the longest such wait, seconds, since the last stats

    def stats(self):
        out = {"bytes": self.bytes, "shaped": self.shaped, "max_wait_ms": round(self.max_wait * 1000, 1)}
        self.max_wait = 0.0
        return out


def main():
    a_name, b_name = sys.argv[1], sys.argv[2]
    fds = [open_tap(a_name), open_tap(b_name)]
    dirs = [Direction(), Direction()]
    cfg = {"delay_ms": 0.0, "loss": 0.0, "rate_kbps": 0.0, "queue_ms": 150.0}
    counters = {"forwarded": 0, "lost": 0, "queue_drops": 0}
    pending = []  # heap of (release time, seq, out fd, frame)
    seq = 0
    stdin = sys.stdin.fileno()
    buf = b""
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        timeout = max(0.0, pending[0][0] - now) if pending else 1.0
        readable, _, _ = select.select(fds + [stdin], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            if fd == stdin:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if msg.get("stats"):
                        stats = dict(counters, at=time.monotonic(), a_to_b=dirs[0].stats(), b_to_a=dirs[1].stats())
                        print(json.dumps(stats), flush=True)
                    else:
                        cfg.update({k: float(v) for k, v in msg.items()})
                continue
            i = fds.index(fd)
            out, d = fds[1 - i], dirs[i]
            for _ in range(256):
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if cfg["loss"] > 0 and is_udp(frame) and random.random() < cfg["loss"]:
                    counters["lost"] += 1
                    continue
                start = max(now, d.busy_until)
                if cfg["rate_kbps"] > 0:
                    if start - now > cfg["queue_ms"] / 1000.0:
                        counters["queue_drops"] += 1
                        continue
                    if start > now:
                        d.shaped += 1
                        d.max_wait = max(d.max_wait, start - now)
                    d.busy_until = start + len(frame) * 8 / (cfg["rate_kbps"] * 1000.0)
                else:
                    d.busy_until = now
                seq += 1
                heapq.heappush(pending, (d.busy_until + cfg["delay_ms"] / 1000.0, seq, out, frame, d))
        while pending and pending[0][0] <= time.monotonic():
            _, _, out, frame, d = heapq.heappop(pending)
            try:
                os.write(out, frame)
                counters["forwarded"] += 1
                d.bytes += len(frame)
            except OSError:
                counters["queue_drops"] += 1


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
