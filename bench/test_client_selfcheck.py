"""Self-check of bench/client.py and bench/ceiling.py (standard library only).

    /usr/bin/python3 bench/test_client_selfcheck.py [-v]

A tiny fake POP3 server runs in-process on 127.0.0.1 (ephemeral port) with
messages holding "." and ".." body lines and an empty body, optionally
sending replies byte by byte or with terminators split across sends, and
answering -ERR where asked.  The multi-line reader is also fed every split
of a reply stream through a fake socket.  The last test measures the
client's ceiling on ~100 MB of synthetic replies and prints it (set
CEILING_MB to change the size, 0 to skip).
"""

import os
import random
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client  # noqa: E402
import ceiling  # noqa: E402
from client import Pop3Error  # noqa: E402

USER, PASSWORD = "alice", "secret"

MESSAGES = [
    b"Subject: one\r\n\r\n.\r\n..\r\nhello\r\n",  # body lines "." and ".."
    b"",                                           # empty message
    b"Subject: three\r\n\r\nx\r\n.\r\n",          # ends with a "." line
    b"Subject: four\r\n\r\n" + b"".join(
        b".line %d ....\r\n" % i if i % 3 == 0 else b"line %d\r\n" % i
        for i in range(3000)),                     # ~40 KB, many dot lines
    b"Subject: five\r\n\r\n.\r\n.\r\n\r\n..\r\n",
]


def stuff(body):
    """Byte-stuff a message body (CRLF lines) for RETR."""
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


def retr_reply(body):
    return b"+OK %d octets\r\n" % len(body) + stuff(body) + b".\r\n"


class FakePop3:
    """Threaded fake POP3 server.

    mode: "whole" (one sendall per reply), "bytewise" (one send per byte)
    or "split" (each reply sent in two parts split inside its terminator,
    with a short pause between them).  err_retr: message numbers whose RETR
    answers -ERR.
    """

    def __init__(self, messages=MESSAGES, mode="whole", err_retr=()):
        self.messages = list(messages)
        self.mode = mode
        self.err_retr = set(err_retr)
        self.sessions = 0
        self.deleted_on_quit = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stop = True
        try:
            socket.create_connection(("127.0.0.1", self.port)).close()
        except OSError:
            pass
        self.lsock.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.stop:
                c.close()
                return
            self.sessions += 1
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _send(self, c, data):
        if self.mode == "bytewise":
            for i in range(len(data)):
                c.send(data[i:i + 1])
        elif self.mode == "split" and data.endswith(b"\r\n.\r\n"):
            cut = len(data) - 1 - (len(data) % 4)  # vary the split point
            c.sendall(data[:cut])
            time.sleep(0.0005)
            c.sendall(data[cut:])
        else:
            c.sendall(data)

    def _session(self, c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = c.makefile("rb")
        user = authed = False
        deleted = set()
        try:
            c.sendall(b"+OK fake ready <1.2@x>\r\n")
            for raw in f:
                parts = raw.rstrip(b"\r\n").split(b" ")
                verb, args = parts[0].upper(), parts[1:]
                if verb == b"USER":
                    user = args == [USER.encode()]
                    c.sendall(b"+OK\r\n")
                elif verb == b"PASS":
                    authed = user and args == [PASSWORD.encode()]
                    c.sendall(b"+OK logged in\r\n" if authed else b"-ERR auth failed\r\n")
                elif verb == b"QUIT":
                    self.deleted_on_quit.append(sorted(deleted))
                    c.sendall(b"+OK bye\r\n")
                    return
                elif not authed:
                    c.sendall(b"-ERR not logged in\r\n")
                elif verb == b"STAT":
                    c.sendall(b"+OK %d %d\r\n" % (len(self.messages),
                                                  sum(map(len, self.messages))))
                elif verb in (b"RETR", b"DELE"):
                    try:
                        k = int(args[0])
                        assert 1 <= k <= len(self.messages) and k not in deleted
                    except (IndexError, ValueError, AssertionError):
                        c.sendall(b"-ERR no such message\r\n")
                        continue
                    if verb == b"DELE":
                        deleted.add(k)
                        c.sendall(b"+OK deleted\r\n")
                    elif k in self.err_retr:
                        c.sendall(b"-ERR cannot read message\r\n")
                    else:
                        self._send(c, retr_reply(self.messages[k - 1]))
                else:
                    c.sendall(b"-ERR unknown\r\n")
        except OSError:
            pass
        finally:
            f.close()
            c.close()


class ChunkSock:
    """Stands in for a socket: recv_into() hands out predefined chunks and
    fails if asked for more (which on a real socket would hang)."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def recv_into(self, mv):
        if not self.chunks:
            raise AssertionError("reader asked for more data than the stream has")
        c = self.chunks.pop(0)
        if len(c) > len(mv):  # the rest stays for the next call
            c, rest = c[:len(mv)], c[len(mv):]
            self.chunks.insert(0, rest)
        mv[:len(c)] = c
        return len(c)


def read_chunks(chunks, n, cap=1 << 16, pending=b""):
    buf = bytearray(cap + client.CARRY)
    return client._read_multi(ChunkSock(chunks), n, buf, pending)


class ReaderTest(unittest.TestCase):
    """_read_multi fed every way of splitting a reply stream."""

    STREAM = b"".join(retr_reply(m) for m in MESSAGES[:3] + MESSAGES[4:])
    N = 4

    def test_every_single_split(self):
        s = self.STREAM
        for i in range(1, len(s)):
            self.assertEqual(read_chunks([s[:i], s[i:]], self.N), len(s), i)

    def test_bytewise_and_random_splits(self):
        s = self.STREAM
        self.assertEqual(read_chunks([s[i:i + 1] for i in range(len(s))], self.N), len(s))
        rnd = random.Random(1)
        for _ in range(300):
            cuts = sorted(rnd.sample(range(1, len(s)), rnd.randint(1, 12)))
            parts = [s[a:b] for a, b in zip([0] + cuts, cuts + [len(s)])]
            self.assertEqual(read_chunks(parts, self.N), len(s))

    def test_pending_and_small_buffer(self):
        s = self.STREAM
        # bytes already buffered by the line reader, larger than the buffer
        self.assertEqual(read_chunks([], self.N, cap=7, pending=s), len(s))
        self.assertEqual(read_chunks([s[40:]], self.N, cap=7, pending=s[:40]), len(s))
        self.assertEqual(read_chunks([s[i:i + 5] for i in range(0, len(s), 5)],
                                     self.N, cap=5), len(s))

    def test_counts_each_terminator_once(self):
        # Replies consisting of almost nothing but terminators.
        s = b"+OK\r\n.\r\n" * 50
        for i in range(1, 30):
            self.assertEqual(read_chunks([s[:i], s[i:]], 50), len(s))
        with self.assertRaises(Pop3Error):  # 50 replies where 49 expected
            read_chunks([s], 49)

    def test_err_replies_raise_without_waiting(self):
        ok = retr_reply(MESSAGES[0])
        for stream, n in [
                (b"-ERR no such message\r\n", 1),               # first reply
                (ok + b"-ERR no such message\r\n", 3),          # middle
                (ok + ok + b"-ERR x\r\n" + ok, 4),               # middle, more follows
                (ok * 2 + b"-ERR x\r\n", 3),                    # last
                (ok + b"garbage\r\n.\r\n", 2),                  # not a status line
        ]:
            for i in range(1, len(stream)):
                with self.assertRaises(Pop3Error, msg=(stream, i)):
                    read_chunks([stream[:i], stream[i:]], n)

    def test_early_close_raises(self):
        class Closed(ChunkSock):
            def recv_into(self, mv):
                return super().recv_into(mv) if self.chunks else 0
        buf = bytearray(1000)
        with self.assertRaises(Pop3Error):
            client._read_multi(Closed([self.STREAM[:-3]]), self.N, buf)


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.close()

    def server(self, **kw):
        s = FakePop3(**kw)
        self.servers.append(s)
        return s

    def test_greeting_and_sessions(self):
        s = self.server()
        self.assertGreater(client.greeting_ms("127.0.0.1", s.port), 0)
        rate = client.sessions_per_s("127.0.0.1", s.port, USER, PASSWORD, 20)
        self.assertGreater(rate, 0)
        self.assertEqual(s.sessions, 21)
        # greeting arriving byte by byte
        s2 = self.server(mode="bytewise")
        self.assertGreater(client.greeting_ms("127.0.0.1", s2.port), 0)

    def test_open_ms_calls_probe(self):
        s = self.server()
        calls = []
        ms = client.open_ms("127.0.0.1", s.port, USER, PASSWORD,
                            probe=lambda sock, phase: calls.append(
                                (phase, sock.getsockname()[0])))
        self.assertGreater(ms, 0)
        self.assertEqual(calls, [("open", "127.0.0.1")])

    def test_retr_each(self):
        for mode in ("whole", "bytewise", "split"):
            s = self.server(mode=mode)
            self.assertGreater(client.retr_each_ms("127.0.0.1", s.port, USER, PASSWORD, 5), 0)
            self.assertEqual(s.deleted_on_quit, [[]])
            with self.assertRaises(Pop3Error):  # RETR 6 -> -ERR
                client.retr_each_ms("127.0.0.1", s.port, USER, PASSWORD, 6)

    def test_retr_pipelined_counts_bytes_and_saves(self):
        expected = b"".join(retr_reply(m) for m in MESSAGES)
        with tempfile.TemporaryDirectory() as d:
            for mode in ("whole", "split", "bytewise"):
                s = self.server(mode=mode)
                path = os.path.join(d, mode)
                phases = []
                r = client.retr_pipelined("127.0.0.1", s.port, USER, PASSWORD,
                                          probe=lambda sock, ph: phases.append(ph),
                                          save=path)
                self.assertEqual(r["messages"], len(MESSAGES))
                self.assertEqual(r["bytes"], len(expected))
                self.assertGreater(r["seconds"], 0)
                self.assertAlmostEqual(r["mb_per_s"], r["bytes"] / 1e6 / r["seconds"])
                self.assertEqual(phases, ["login", "done"])
                with open(path, "rb") as f:
                    self.assertEqual(f.read(), expected)
                self.assertEqual(s.sessions, 2)  # timed run + untimed save run

    def test_retr_pipelined_many_messages(self):
        # > INLINE_SEND bytes of commands: exercises the sender thread.
        msgs = [b"Subject: %d\r\n\r\n.\r\nbody %d\r\n" % (i, i) for i in range(20000)]
        s = self.server(messages=msgs)
        r = client.retr_pipelined("127.0.0.1", s.port, USER, PASSWORD)
        self.assertEqual(r["messages"], 20000)
        self.assertEqual(r["bytes"], sum(len(retr_reply(m)) for m in msgs))

    def test_err_raises(self):
        s = self.server()
        h, p = "127.0.0.1", s.port
        bad = [
            lambda: client.sessions_per_s(h, p, USER, "wrong", 3),
            lambda: client.open_ms(h, p, USER, "wrong"),
            lambda: client.retr_each_ms(h, p, USER, "wrong", 1),
            lambda: client.retr_pipelined(h, p, USER, "wrong"),
            lambda: client.dele_quit_ms(h, p, USER, "wrong", "first"),
            lambda: client.quit_ms(h, p, "nobody", PASSWORD),
        ]
        for f in bad:
            with self.assertRaises(Pop3Error):
                f()
        for errs in ({1}, {3}, {5}, {2, 4}):
            s = self.server(err_retr=errs)
            t0 = time.perf_counter()
            with self.assertRaises(Pop3Error):
                client.retr_pipelined("127.0.0.1", s.port, USER, PASSWORD)
            self.assertLess(time.perf_counter() - t0, 5)
            with self.assertRaises(Pop3Error):
                client.retr_each_ms("127.0.0.1", s.port, USER, PASSWORD, 5)
        # -ERR in the middle of a long pipelined run (sender thread busy)
        msgs = [b"x\r\n"] * 20000
        s = self.server(messages=msgs, err_retr={10000})
        with self.assertRaises(Pop3Error):
            client.retr_pipelined("127.0.0.1", s.port, USER, PASSWORD)

    def test_not_pop3(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)

        def serve():
            c, _ = lsock.accept()
            c.sendall(b"HTTP/1.0 400 Bad\r\n")
            c.close()
        threading.Thread(target=serve, daemon=True).start()
        with self.assertRaises(Pop3Error):
            client.greeting_ms("127.0.0.1", lsock.getsockname()[1])
        lsock.close()

    def test_timeout_raises(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)  # accepts (in the kernel) but never says anything
        saved, client.TIMEOUT = client.TIMEOUT, 0.3
        try:
            t0 = time.perf_counter()
            with self.assertRaises(Pop3Error):
                client.greeting_ms("127.0.0.1", lsock.getsockname()[1])
            self.assertLess(time.perf_counter() - t0, 2)
        finally:
            client.TIMEOUT = saved
            lsock.close()

    def test_dele_and_quit(self):
        s = self.server()
        self.assertGreater(client.dele_quit_ms("127.0.0.1", s.port, USER, PASSWORD, "first"), 0)
        self.assertGreater(client.dele_quit_ms("127.0.0.1", s.port, USER, PASSWORD, "all"), 0)
        self.assertGreater(client.quit_ms("127.0.0.1", s.port, USER, PASSWORD), 0)
        self.assertEqual(s.deleted_on_quit, [[1], [1, 2, 3, 4, 5], []])
        msgs = [b"x\r\n"] * 20000  # pipelined DELE with the sender thread
        s = self.server(messages=msgs)
        client.dele_quit_ms("127.0.0.1", s.port, USER, PASSWORD, "all")
        self.assertEqual(s.deleted_on_quit, [list(range(1, 20001))])


def synthetic_stream(path, total_bytes, body_bytes=10_000):
    """Write n RETR replies of "+OK\\r\\n" + ~body_bytes of CRLF lines + ".\\r\\n";
    return n."""
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    reply = b"+OK\r\n" + line * (body_bytes // len(line)) + b".\r\n"
    n = max(1, total_bytes // len(reply))
    with open(path, "wb") as f:
        block = reply * 1000
        for _ in range(n // 1000):
            f.write(block)
        f.write(reply * (n % 1000))
    return n


class CeilingTest(unittest.TestCase):
    def test_ceiling_from_saved_file(self):
        msgs = [b"Subject: %d\r\n\r\n" % i + b".\r\n..\r\n" + b"x" * 70 + b"\r\n" * 130
                for i in range(300)]  # ~3 MB
        s = FakePop3(messages=msgs, mode="split")
        try:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "saved")
                r = client.retr_pipelined("127.0.0.1", s.port, USER, PASSWORD, save=path)
                self.assertEqual(os.path.getsize(path), r["bytes"])
                c = ceiling.ceiling(path, r["messages"], runs=3)
                self.assertEqual(c["bytes"], r["bytes"])
                self.assertEqual(len(c["runs_mb_per_s"]), 3)
                self.assertGreater(c["mb_per_s"], 0)
                # the server answers QUIT after the stream and survives runs
                srv = ceiling.CeilingServer(path, r["messages"])
                pid = srv.proc.pid
                try:
                    client.retr_pipelined("127.0.0.1", srv.port, "a", "b")
                    client.retr_pipelined("127.0.0.1", srv.port, "a", "b")
                finally:
                    srv.close()
                with self.assertRaises(ProcessLookupError):
                    os.kill(pid, 0)  # reaped
        finally:
            s.close()

    def test_ceiling_100mb(self):
        mb = int(os.environ.get("CEILING_MB", "100"))
        if mb <= 0:
            self.skipTest("CEILING_MB=0")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "synthetic")
            n = synthetic_stream(path, mb * 1_000_000)
            c = ceiling.ceiling(path, n, runs=5)
            sys.stderr.write(
                "\nclient ceiling: %.0f MB/s best (%d replies, %.1f MB; runs: %s MB/s)\n"
                % (c["mb_per_s"], n, c["bytes"] / 1e6,
                   ", ".join("%.0f" % x for x in c["runs_mb_per_s"])))
            self.assertGreater(c["mb_per_s"], 300)


if __name__ == "__main__":
    unittest.main()
