"""The harness itself, with no pop3d option it does not need: the two
mounts share files, OFD and lockf locks and link() dotlocks; a delivery
through one mount is read through the other; each host's launcher serves
a session on its own address; HAProxy passes sessions to both hosts and
sends them a PROXY v2 header (which a pop3d without -P reads as a bad
command, after its greeting)."""
import errno
import fcntl
import os

import pytest

from harness import (HAProxy, Pop3, deliver, dotlockfile_deliver, message,
                     ofd_lock, procmail_deliver, unstuff, V2_SIG)


def test_file_written_through_one_mount_reads_through_the_other(cluster):
    a, b = cluster.mounts["hostA"][0], cluster.mounts["hostB"][0]
    (a / "probe").write_bytes(b"through A\n")
    assert (b / "probe").read_bytes() == b"through A\n"
    with open(b / "probe", "ab") as f:
        f.write(b"and B\n")
    assert (a / "probe").read_bytes() == b"through A\nand B\n"
    assert os.stat(a / "probe").st_size == 16      # no stale attributes
    os.unlink(b / "probe")
    assert not (a / "probe").exists()


@pytest.mark.parametrize("kind", ["ofd", "lockf"])
def test_a_lock_through_one_mount_holds_through_the_other(cluster, kind):
    a, b = cluster.mounts["hostA"][0], cluster.mounts["hostB"][0]
    fa = os.open(a / f"lock-{kind}", os.O_RDWR | os.O_CREAT, 0o600)
    fb = os.open(b / f"lock-{kind}", os.O_RDWR)
    try:
        ofd_lock(fa)
        with pytest.raises(OSError) as e:
            if kind == "ofd":
                ofd_lock(fb)
            else:
                fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        ofd_lock(fa, fcntl.F_UNLCK)
        if kind == "ofd":
            ofd_lock(fb)
        else:
            fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fa)
        os.close(fb)
        os.unlink(a / f"lock-{kind}")


def test_link_dotlocks_are_exclusive_across_mounts(cluster):
    a, b = cluster.mounts["hostA"][0], cluster.mounts["hostB"][0]
    (a / "t1").write_text("1\n")
    (b / "t2").write_text("2\n")
    os.link(a / "t1", a / "box.lock")
    with pytest.raises(FileExistsError):
        os.link(b / "t2", b / "box.lock")
    assert (b / "box.lock").read_text() == "1\n"
    for p in (a / "box.lock", a / "t1", b / "t2"):
        os.unlink(p)


def test_deliveries_through_b_are_read_through_a(cluster, account,
                                                 maildrops, scratch):
    name, _ = maildrops.new()
    box_a = cluster.mounts["hostA"][0] / "spool" / name
    box_b = cluster.mounts["hostB"][0] / "spool" / name
    chunks = [message(f"{name}-{i}")[0] for i in range(3)]
    ok, err = procmail_deliver(box_b, chunks[0], scratch)
    assert ok, err
    ok, err = dotlockfile_deliver(box_b, chunks[1])
    assert ok, err
    deliver(box_a, chunks[2])
    assert box_a.read_bytes() == b"".join(chunks)
    assert box_b.read_bytes() == b"".join(chunks)
    assert sorted(os.listdir(box_a.parent)) == sorted(
        os.listdir(box_b.parent))
    assert not (box_a.parent / f"{name}.lock").exists()


def plain_launchers(hosts):
    """Launchers without -P and -S (the options the harness must not
    depend on)."""
    return hosts.a.launch(proxy=False, state=False), \
        hosts.b.launch(proxy=False, state=False)


def test_each_host_serves_a_session(hosts, maildrops):
    chunk, wire = message("h1")
    name, pw = maildrops.new(chunk)
    for h, la in zip((hosts.a, hosts.b), plain_launchers(hosts)):
        mark = la.mark()
        c = Pop3.tcp(h.addr, la.port)
        assert c.login(name, pw) == \
            f"+OK Maildrop has 1 messages ({len(wire)} octets)"
        st, body = c.multi("RETR 1")
        assert st.startswith("+OK") and unstuff(body) == wire
        assert c.cmd("QUIT").startswith("+OK")
        c.close()
        la.stop()
        log = la.log_since(mark)
        assert "connection from 127.0.0.1" in log, log
        assert f"login ok: {name} from 127.0.0.1" in log, log


def test_haproxy_reaches_both_hosts_with_a_v2_header(hosts, maildrops,
                                                     scratch):
    """send-proxy-v2 to launchers without -P: each connection reaches a
    host (the greeting), and the header, read as commands, ends it: the
    v2 signature is CR LF CR LF NUL CR LF "QUIT" LF, made so that a server
    that does not expect it stops at once."""
    la, lb = plain_launchers(hosts)
    hp = HAProxy(scratch, {"a": (hosts.a.addr, la.port),
                           "b": (hosts.b.addr, lb.port)}, name="haproxy-v2")
    try:
        for _ in range(2):
            c = hp.connect("rr")
            assert c.line() == "+OK pop3d ready"
            assert c.until_eof() == (b"-ERR Unknown command\r\n" * 2 +
                                     b"-ERR Invalid characters in command\r\n"
                                     b"+OK pop3d signing off\r\n")
            c.close()
    finally:
        hp.stop()
        la.stop()
        lb.stop()


def test_haproxy_round_robin_over_both_hosts(hosts, maildrops, scratch):
    """send-proxy (v1) to launchers without -P: the header line is one bad
    command after the greeting, then a session logs in; round robin
    sends two of four sessions to each host."""
    chunk, wire = message("h2")
    name, pw = maildrops.new(chunk)
    la, lb = plain_launchers(hosts)
    hp = HAProxy(scratch, {"a": (hosts.a.addr, la.port),
                           "b": (hosts.b.addr, lb.port)}, name="haproxy-v1",
                 proxy="v1")
    try:
        marks = (la.mark(), lb.mark())
        for _ in range(4):
            c = hp.connect("rr")
            assert c.line() == "+OK pop3d ready"
            assert c.line() == "-ERR Unknown command"
            assert c.cmd(f"USER {name}").startswith("+OK")
            assert c.cmd(f"PASS {pw}") == \
                f"+OK Maildrop has 1 messages ({len(wire)} octets)"
            assert c.cmd("QUIT").startswith("+OK")
            c.close()
        logs = (la.log_since(marks[0]), lb.log_since(marks[1]))
        for lg in logs:
            assert lg.count(f"login ok: {name} from 127.0.0.1") == 2, logs
    finally:
        hp.stop()
        la.stop()
        lb.stop()


def test_haproxy_health_check_carries_the_header(hosts, scratch):
    """HAProxy's check to a send-proxy-v2 server sends a v2 header too
    (LOCAL), then expects +OK: a listener here records what it gets."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind((hosts.a.addr, 0))
    srv.listen(4)
    srv.settimeout(20)
    got = []

    def serve():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.settimeout(5)
        conn.sendall(b"+OK pop3d ready\r\n")
        data = b""
        try:
            while len(data) < 16:
                d = conn.recv(4096)
                if not d:
                    break
                data += d
        except OSError:
            pass
        got.append(data)
        conn.close()
    t = threading.Thread(target=serve)
    t.start()
    hp = HAProxy(scratch, {"a": (hosts.a.addr, srv.getsockname()[1])},
                 name="haproxy-check")
    try:
        t.join(30)
    finally:
        hp.stop()
        srv.close()
    assert got and got[0].startswith(V2_SIG), got
    assert got[0][12] == 0x20, f"a LOCAL command expected: {got[0]!r}"
