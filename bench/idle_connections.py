#!/usr/bin/env python3
"""Memory per idle keep-alive client connection of a running proxy.

Opens N connections to 127.0.0.1:PORT, sends one GET on each, reads each
answer, keeps them all open, and prints the growth of PID's resident set
divided by N (NGINX: pass the worker's pid), after the connections have
been idle for IDLE_S seconds (default 7: serin's workers give the memory of
a burst back to the system at their pool sweep, every 5 s). Also prints the
growth of anonymous memory alone: the rest is the executable's own pages,
touched while serving, shared and not per connection.

    bench/idle_connections.py PORT PID [N] [IDLE_S]
"""
import resource
import socket
import sys
import time


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    idle_s = float(sys.argv[4]) if len(sys.argv) > 4 else 7.0
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
    before = rss_kib(pid)
    anon_before = status_kib(pid, "RssAnon")
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        socks.append(s)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    time.sleep(idle_s)
    after = rss_kib(pid)
    anon_after = status_kib(pid, "RssAnon")
    print(f"{n} idle connections: RSS {before} KiB -> {after} KiB, "
          f"{(after - before) * 1024 / n:.0f} bytes per connection; "
          f"anonymous {anon_before} KiB -> {anon_after} KiB, "
          f"{(anon_after - anon_before) * 1024 / n:.0f} bytes per connection")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
