"""The measuring client's own limit: the same wire bytes from a trivial sender.

CeilingServer replays a reply stream saved by
``client.retr_pipelined(save=...)``: it speaks just enough POP3 for
retr_pipelined and answers the first RETR by sending the whole saved file
with socket.sendfile() (zero copy).  It runs as a separate Python process
(this file with --serve) so that it does not share the measuring client's
GIL; the listening socket is created here and handed to the child, so the
port is known and accepting before the child has even started.

    python3 bench/ceiling.py SAVED_FILE N [RUNS]   # print the ceiling
"""

import os
import socket
import subprocess
import sys
import threading

try:
    from . import client
except ImportError:  # run as a script or imported from bench/
    import client


class CeilingServer:
    """Replays ``saved_path`` (``n`` RETR replies) on 127.0.0.1:``.port``."""

    def __init__(self, saved_path, n):
        self.saved_path = os.path.abspath(saved_path)
        self.n = int(n)
        os.stat(self.saved_path)  # fail here, not in the child
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(16)
            self.port = lsock.getsockname()[1]
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--serve",
                 str(lsock.fileno()), self.saved_path, str(self.n)],
                pass_fds=[lsock.fileno()], stdin=subprocess.DEVNULL)
        finally:
            lsock.close()  # the child has its own copy

    def close(self):
        """Stop the server process this object started, and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ceiling(saved_path, n, runs=5):
    """The best (by mb_per_s) of ``runs`` retr_pipelined runs against a
    CeilingServer replaying ``saved_path``: a limit, so the fastest run
    is the measure (a slow run only shows the machine was busy).

    Returns {"mb_per_s", "seconds", "bytes", "messages", "runs_mb_per_s"}.
    """
    size = os.path.getsize(saved_path)
    results = []
    with CeilingServer(saved_path, n) as srv:
        for _ in range(runs):
            r = client.retr_pipelined("127.0.0.1", srv.port, "ceiling", "ceiling")
            if r["bytes"] != size or r["messages"] != n:
                raise client.Pop3Error(
                    "ceiling run received %d bytes / %d messages, expected %d / %d"
                    % (r["bytes"], r["messages"], size, n))
            results.append(r)
    results.sort(key=lambda r: r["mb_per_s"])
    best = results[-1]
    return {"mb_per_s": best["mb_per_s"], "seconds": best["seconds"],
            "bytes": best["bytes"], "messages": n,
            "runs_mb_per_s": [r["mb_per_s"] for r in results]}


# --------------------------------------------------------------------------
# The server process


def _serve(fd, path, n):
    lsock = socket.socket(fileno=fd)
    # Wake up now and then to exit if the parent died without close().
    lsock.settimeout(1.0)
    parent = os.getppid()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while True:
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                if os.getppid() != parent:
                    return
                continue
            conn.settimeout(None)
            try:
                _session(conn, f, n, size)
            except OSError:
                pass  # client went away; wait for the next one
            finally:
                conn.close()


def _session(conn, f, n, size):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(b"+OK ready\r\n")
    buf = b""
    while True:
        i = buf.find(b"\r\n")
        if i < 0:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            continue
        line, buf = buf[:i], buf[i + 2:]
        verb = line.split(b" ", 1)[0].upper()
        if verb in (b"USER", b"PASS", b"NOOP"):
            conn.sendall(b"+OK\r\n")
        elif verb == b"STAT":
            conn.sendall(b"+OK %d %d\r\n" % (n, size))
        elif verb == b"QUIT":
            conn.sendall(b"+OK bye\r\n")
            return
        elif verb == b"RETR":
            _blast(conn, f, buf)
            return
        else:
            conn.sendall(b"-ERR unknown command\r\n")


def _blast(conn, f, rest):
    """Send the whole saved stream at once; a thread meanwhile reads and
    discards the remaining RETR commands (so the client's sendall never
    blocks) until it sees QUIT, which is answered once the stream is out."""
    quit_seen = threading.Event()

    def drain(data):
        prev = b""
        # A QUIT split across two reads is found in prev's tail + data's head.
        while b"QUIT" not in data and b"QUIT" not in prev[-3:] + data[:3]:
            prev = data
            data = conn.recv(1 << 20)
            if not data:
                return
        quit_seen.set()

    t = threading.Thread(target=drain, args=(rest,), daemon=True)
    t.start()
    conn.sendfile(f, 0)
    t.join()
    if quit_seen.is_set():
        conn.sendall(b"+OK bye\r\n")


def _main(argv):
    if len(argv) == 4 and argv[0] == "--serve":
        try:
            _serve(int(argv[1]), argv[2], int(argv[3]))
        except KeyboardInterrupt:
            pass
        return 0
    if len(argv) in (2, 3):
        r = ceiling(argv[0], int(argv[1]), int(argv[2]) if len(argv) == 3 else 3)
        print("ceiling: %.0f MB/s (%d bytes in %.3f s; runs %s)"
              % (r["mb_per_s"], r["bytes"], r["seconds"],
                 ", ".join("%.0f" % x for x in r["runs_mb_per_s"])))
        return 0
    print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
