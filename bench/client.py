"""POP3 measurement client for the pop3d benchmark (standard library only).

Every function connects to ``host:port`` over plain TCP, logs in with
USER/PASS where needed, and raises :class:`Pop3Error` on any -ERR reply or
protocol surprise.  Times come from ``time.perf_counter()``.

``probe``, when given, is a callable ``probe(sock, phase)`` the driver uses
to sample the server process; it is always called outside the timed region.

The hot path is :func:`_read_multi`, which reads a stream of multi-line
replies into one large preallocated buffer with ``recv_into`` and finds the
reply boundaries with one C-level regex pass per chunk (no copies, no
per-line Python work), so that the pipelined download is limited by the
server rather than by Python (~2.3 GB/s on loopback; see ceiling.py).

Timeouts: TIMEOUT seconds per blocking receive or send (read when a socket
is created); a stalled server then raises Pop3Error instead of hanging.
"""

import re
import socket
import struct
import threading
import time

__all__ = [
    "Pop3Error", "greeting_ms", "sessions_per_s", "open_ms", "retr_each_ms",
    "retr_pipelined", "dele_quit_ms", "quit_ms", "session_ms",
]

# Seconds a single recv/send may block before the call fails (a stalled
# server must not hang the benchmark).
TIMEOUT = 120.0

# Size of the receive buffer of the multi-line reader.
RECV_BUF = 4 << 20

# Commands larger than this are sent from a helper thread (see _send_bulk).
INLINE_SEND = 16 << 10

# Longest single-line reply we accept before calling it a protocol error.
MAX_LINE = 64 << 10

TERM = b"\r\n.\r\n"   # end of a multi-line reply ("\r\n" + "." line)
OK_START = TERM + b"+"  # a reply end followed by the start of a +OK reply
CARRY = len(TERM)     # bytes carried over between two receive calls
# Reply ends followed by the first byte of the next reply.  A regex with a
# literal prefix searches faster here than bytearray.count().
_find_starts = re.compile(re.escape(TERM) + b".", re.DOTALL).findall


class Pop3Error(Exception):
    """The server answered -ERR, closed early, or broke the protocol."""


# --------------------------------------------------------------------------
# Connection and single-line replies


def _connect_socket(host, port):
    """An unconnected TCP socket with TCP_NODELAY and kernel-level timeouts.

    The socket is left in blocking mode on purpose: a Python-level timeout
    (settimeout) makes CPython call poll() before every recv/send, one extra
    system call per chunk on the hot path.  SO_RCVTIMEO/SO_SNDTIMEO give the
    same protection (the call fails with EAGAIN) at no per-call cost.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tv = struct.pack("ll", int(TIMEOUT), int((TIMEOUT % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return sock


def _b(s):
    return s if isinstance(s, bytes) else str(s).encode()


class _Conn:
    """A socket plus a small buffered line reader for lock-step replies."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""   # received bytes not yet consumed ...
        self.pos = 0     # ... start at buf[pos]
        self.big = None  # lazily allocated buffer for multi-line replies

    def readline(self):
        """The next line without its CRLF; copes with lines arriving in
        pieces and with several lines arriving in one piece."""
        buf, pos = self.buf, self.pos
        i = buf.find(b"\r\n", pos)
        while i < 0:
            if len(buf) - pos > MAX_LINE:
                raise Pop3Error("reply line too long: %r..." % buf[pos:pos + 80])
            try:
                data = self.sock.recv(16384)
            except OSError as e:  # EAGAIN from SO_RCVTIMEO, reset, ...
                raise Pop3Error("no reply line: %r" % e) from None
            if not data:
                raise Pop3Error("connection closed by server (partial line %r)"
                                % buf[pos:pos + 80])
            searched = len(buf) - pos
            buf = buf[pos:] + data
            pos = 0
            # Only the new data (plus a CR possibly left at the old end)
            # can hold the CRLF.
            i = buf.find(b"\r\n", max(0, searched - 1))
        self.buf, self.pos = buf, i + 2
        return buf[pos:i]

    def pending(self):
        """Take the received but unconsumed bytes (normally none)."""
        rest = self.buf[self.pos:]
        self.buf, self.pos = b"", 0
        return rest

    def ok(self, what):
        """Read one reply line; return it if +OK, raise Pop3Error otherwise."""
        line = self.readline()
        if line[:3] == b"+OK":
            return line
        if line[:4] == b"-ERR":
            raise Pop3Error("%s: %s" % (what, line.decode("latin-1")))
        raise Pop3Error("%s: not a POP3 reply: %r" % (what, line[:80]))

    def cmd(self, line):
        """Send one command and wait for its +OK line."""
        self.sock.sendall(line + b"\r\n")
        return self.ok(line.split(b" ", 1)[0].decode("latin-1"))

    def buffer(self):
        if self.big is None:
            self.big = bytearray(RECV_BUF + CARRY)  # zero-filled: pages touched now
        return self.big

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _open(host, port):
    """Connect and read the greeting."""
    sock = _connect_socket(host, port)
    try:
        sock.connect((host, port))
        conn = _Conn(sock)
        conn.ok("greeting")
    except BaseException:
        sock.close()
        raise
    return conn


def _login(host, port, user, password):
    conn = _open(host, port)
    try:
        conn.cmd(b"USER " + _b(user))
        conn.cmd(b"PASS " + _b(password))
    except BaseException:
        conn.close()
        raise
    return conn


def _stat(conn):
    """STAT -> number of messages."""
    line = conn.cmd(b"STAT")
    try:
        return int(line.split()[1])
    except (IndexError, ValueError):
        raise Pop3Error("STAT: malformed reply %r" % line) from None


def _quit(conn):
    try:
        conn.cmd(b"QUIT")
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Bulk sending and the multi-line reply reader (the hot path)


def _send_bulk(sock, data):
    """Start sending ``data`` (a pipelined command stream); return a joiner.

    The first INLINE_SEND bytes are written here, so the caller's clock
    starts at a real first send.  The rest, if any, goes out from a helper
    thread: with a big stream both sides could otherwise block on full
    socket buffers (we waiting in send, the server waiting for us to read
    its replies).  The thread spends its time inside send(), which releases
    the GIL.  Call the returned function after reading to join the thread
    and re-raise any error it met.
    """
    head = data[:INLINE_SEND]
    sock.sendall(head)
    if len(data) <= len(head):
        return lambda: None
    rest = memoryview(data)[len(head):]
    errors = []

    def run():
        try:
            sock.sendall(rest)
        except BaseException as e:  # reported by join()
            errors.append(e)

    t = threading.Thread(target=run, name="pop3-send", daemon=True)
    t.start()

    def join():
        t.join(TIMEOUT)
        if t.is_alive():
            raise Pop3Error("command sender did not finish")
        if errors:
            raise Pop3Error("sending commands failed: %r" % errors[0])
    return join


def _read_multi(sock, n, buf, pending=b"", sink=None):
    r"""Read exactly ``n`` complete multi-line +OK replies; return their bytes.

    How replies are counted.  Byte-stuffing guarantees that TERM
    ("\r\n.\r\n") occurs only at the end of a multi-line reply, so TERM
    followed by any byte marks the start of the next reply, and that byte
    must be the "+" of "+OK".  One C-level regex pass per chunk
    (_find_starts, ~3.7 GB/s; two bytearray.count() passes would manage
    ~1.5 GB/s) lists these 6-byte "reply starts"; reply ends are rare
    (one per message), so the lists are short.  A fake TERM placed before
    the stream makes the first reply's start count the same way.

    * A start that is not "+" (e.g. -ERR: a single line without a
      terminator, which we would otherwise wait for forever, or garbage)
      raises Pop3Error at once.
    * We are done when n starts have been seen and the stream ends with
      TERM: reply n has begun, and a TERM after its start can only be its
      end.  More than n starts means more replies than commands.

    Patterns split between two receive calls: data is received with
    recv_into() into buf[CARRY:], and buf[:CARRY] holds the last CARRY (5)
    bytes of the stream so far (fake TERM included), and the search runs
    over buf[0:end].  A 6-byte start thus needs at least one new byte: it
    is found once whichever way it is split, and never again once it lies
    wholly in old data.

    ``buf`` is a reusable bytearray of CARRY + capacity bytes.  ``pending``
    holds bytes the line reader already received.  ``sink``, if given, is
    called with a memoryview of each chunk (to save the stream; never used
    in timed runs).
    """
    mv = memoryview(buf)
    room = mv[CARRY:]
    cap = len(room)
    find_starts = _find_starts
    recv_into = sock.recv_into
    buf[0:CARRY] = TERM
    starts = total = 0
    pending = memoryview(pending)
    while True:
        if pending:
            k = min(len(pending), cap)
            room[:k] = pending[:k]
            pending = pending[k:]
        else:
            try:
                k = recv_into(room)
            except OSError as e:  # EAGAIN from SO_RCVTIMEO, reset, ...
                raise Pop3Error("receive failed after %d bytes, %d of %d replies "
                                "begun: %r" % (total, starts, n, e)) from None
            if not k:
                raise Pop3Error("connection closed after %d bytes, %d of %d "
                                "replies begun" % (total, starts, n))
        end = CARRY + k
        total += k
        if sink is not None:
            sink(mv[CARRY:end])
        found = find_starts(buf, 0, end)
        if found:
            ok = found.count(OK_START)
            if ok != len(found):
                raise Pop3Error(_bad_start(buf, end, starts, found, n))
            starts += ok
        if starts >= n:
            if starts > n:
                raise Pop3Error("more than %d replies received" % n)
            if buf[end - CARRY:end] == TERM:
                return total
        buf[0:CARRY] = buf[end - CARRY:end]


def _bad_start(buf, end, starts, found, n):
    """Describe a reply that does not start with +OK (error path only)."""
    i = 0
    while found[i] == OK_START:
        i += 1
    # Earlier matches are all OK_START, so this is the first occurrence.
    j = buf.find(found[i], 0, end)
    line = bytes(buf[j + len(TERM):buf.find(b"\r\n", j + len(TERM), end)])
    if line[:4] == b"-ERR":
        return "reply %d of %d: %s" % (starts + i + 1, n, line.decode("latin-1"))
    return "reply %d of %d is not a POP3 status: %r" % (starts + i + 1, n, line[:80])


# --------------------------------------------------------------------------
# Measurements


def greeting_ms(host, port):
    """Milliseconds from just before connect() to the full greeting line."""
    sock = _connect_socket(host, port)
    try:
        conn = _Conn(sock)
        t0 = time.perf_counter()
        sock.connect((host, port))
        conn.ok("greeting")
        t1 = time.perf_counter()
        conn.cmd(b"QUIT")
    finally:
        sock.close()
    return (t1 - t0) * 1e3


def sessions_per_s(host, port, user, password, n):
    """n sequential lock-step sessions (connect, greeting, USER, PASS, STAT,
    QUIT); returns sessions per second."""
    if n <= 0:
        raise ValueError("n must be positive")
    user_cmd, pass_cmd = b"USER " + _b(user), b"PASS " + _b(password)
    t0 = time.perf_counter()
    for _ in range(n):
        conn = _open(host, port)
        try:
            conn.cmd(user_cmd)
            conn.cmd(pass_cmd)
            conn.cmd(b"STAT")
            conn.cmd(b"QUIT")
        finally:
            conn.close()
    return n / (time.perf_counter() - t0)


def open_ms(host, port, user, password, probe=None):
    """Milliseconds from sending PASS to receiving the STAT reply (the
    server opening and indexing the mailbox)."""
    conn = _open(host, port)
    try:
        conn.cmd(b"USER " + _b(user))
        pass_cmd = b"PASS " + _b(password) + b"\r\n"
        t0 = time.perf_counter()
        conn.sock.sendall(pass_cmd)
        conn.ok("PASS")
        conn.sock.sendall(b"STAT\r\n")
        conn.ok("STAT")
        t1 = time.perf_counter()
        if probe is not None:
            probe(conn.sock, "open")
        conn.cmd(b"QUIT")
    finally:
        conn.close()
    return (t1 - t0) * 1e3


def retr_each_ms(host, port, user, password, count):
    """Mean milliseconds per message for lock-step RETR 1..count."""
    if count <= 0:
        raise ValueError("count must be positive")
    conn = _login(host, port, user, password)
    try:
        buf = conn.buffer()
        sock = conn.sock
        cmds = [b"RETR %d\r\n" % i for i in range(1, count + 1)]
        pending = conn.pending()
        t0 = time.perf_counter()
        for c in cmds:
            sock.sendall(c)
            _read_multi(sock, 1, buf, pending)
            pending = b""
        t1 = time.perf_counter()
        _quit(conn)
    finally:
        conn.close()
    return (t1 - t0) * 1e3 / count


def _retr_all(conn, n, cmds, sink=None):
    """Pipeline ``cmds`` (RETR 1..n) and read the n replies.
    Returns (reply bytes, seconds from first send to last byte)."""
    sock = conn.sock
    buf = conn.buffer()
    pending = conn.pending()
    t0 = time.perf_counter()
    try:
        join = _send_bulk(sock, cmds)
        nbytes = _read_multi(sock, n, buf, pending, sink)
        t1 = time.perf_counter()
    except BaseException:
        # Wake a sender thread that may be blocked in send().
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise
    join()
    return nbytes, t1 - t0


def retr_pipelined(host, port, user, password, probe=None, save=None):
    """Download the whole mailbox with all RETRs pipelined.

    Returns {"bytes", "seconds", "mb_per_s", "messages"}; time runs from the
    first send to the last byte of the n-th reply.  With ``save`` the exact
    reply bytes are written to that path in a second, untimed session that
    follows the timed one.
    """
    conn = _login(host, port, user, password)
    try:
        n = _stat(conn)
        if n <= 0:
            raise Pop3Error("mailbox is empty")
        cmds = b"".join([b"RETR %d\r\n" % i for i in range(1, n + 1)])
        conn.buffer()
        if probe is not None:
            probe(conn.sock, "login")
        nbytes, secs = _retr_all(conn, n, cmds)
        if probe is not None:
            probe(conn.sock, "done")
        _quit(conn)
    finally:
        conn.close()
    if save is not None:
        _save_run(host, port, user, password, n, cmds, save)
    return {"bytes": nbytes, "seconds": secs,
            "mb_per_s": nbytes / 1e6 / secs, "messages": n}


def _save_run(host, port, user, password, n, cmds, path):
    conn = _login(host, port, user, password)
    try:
        if _stat(conn) != n:
            raise Pop3Error("mailbox changed between runs")
        with open(path, "wb") as f:
            _retr_all(conn, n, cmds, sink=f.write)
        _quit(conn)
    finally:
        conn.close()


def dele_quit_ms(host, port, user, password, which):
    """DELE the first message or all of them, then time QUIT -> +OK (the
    server committing the deletions)."""
    if which not in ("first", "all"):
        raise ValueError("which must be 'first' or 'all'")
    conn = _login(host, port, user, password)
    try:
        n = _stat(conn)
        if n <= 0:
            raise Pop3Error("mailbox is empty")
        if which == "first":
            conn.cmd(b"DELE 1")
        else:
            cmds = b"".join([b"DELE %d\r\n" % i for i in range(1, n + 1)])
            join = _send_bulk(conn.sock, cmds)
            try:
                for _ in range(n):
                    conn.ok("DELE")
            except BaseException:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise
            join()
        return _timed_quit(conn)
    finally:
        conn.close()


def quit_ms(host, port, user, password):
    """Milliseconds for QUIT -> +OK after STAT, nothing deleted."""
    conn = _login(host, port, user, password)
    try:
        _stat(conn)
        return _timed_quit(conn)
    finally:
        conn.close()


def _timed_quit(conn):
    t0 = time.perf_counter()
    conn.sock.sendall(b"QUIT\r\n")
    conn.ok("QUIT")
    t1 = time.perf_counter()
    conn.close()
    return (t1 - t0) * 1e3


def session_ms(host, port, user, password, dele=False):
    """One lock-step session: connect, greeting, USER, PASS, STAT,
    DELE 1 when ``dele``, QUIT.  Returns (ms from just before connect()
    to QUIT's +OK, ms from sending QUIT to its +OK)."""
    sock = _connect_socket(host, port)
    try:
        conn = _Conn(sock)
        t0 = time.perf_counter()
        sock.connect((host, port))
        conn.ok("greeting")
        conn.cmd(b"USER " + _b(user))
        conn.cmd(b"PASS " + _b(password))
        if _stat(conn) <= 0 and dele:
            raise Pop3Error("mailbox is empty")
        if dele:
            conn.cmd(b"DELE 1")
        t1 = time.perf_counter()
        sock.sendall(b"QUIT\r\n")
        conn.ok("QUIT")
        t2 = time.perf_counter()
    finally:
        sock.close()
    return (t2 - t0) * 1e3, (t2 - t1) * 1e3
