"""The harness itself, with no pop3d option it does not need: the two
mounts share files, OFD and lockf locks and link() dotlocks; a delivery
through one mount is read through the other; each host's launcher serves
a session on its own address; HAProxy passes sessions to both hosts and
sends them a PROXY v2 header (which a pop3d without -P reads as a bad
command, after its greeting)."""
import errno
import fcntl
import os
import re
import shutil
import subprocess

import pytest

from harness import (ACCOUNT, HAPROXY_ADDR, REPO, HAProxy, Pop3, V2_SIG,
                     deliver, dotlockfile_deliver, free_port, message,
                     ofd_lock, port_in_listen, procmail_deliver, stop_pid,
                     unstuff, wait_for)

SYSTEM_STATE = "/var/lib/pop3d"     # pop3d's default -S


@pytest.fixture(autouse=True)
def no_system_state_left():
    """A launcher without -S keeps the account's state in pop3d's default
    state directory: remove what a test made there."""
    had_base = os.path.isdir(SYSTEM_STATE)
    sub = os.path.join(SYSTEM_STATE, ACCOUNT)
    had_sub = os.path.lexists(sub)
    yield
    if not had_sub and os.path.isdir(sub):
        shutil.rmtree(sub, ignore_errors=True)
    if not had_base and os.path.isdir(SYSTEM_STATE):
        try:
            os.rmdir(SYSTEM_STATE)
        except OSError:
            pass


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


SHIPPED = REPO / "haproxy" / "pop3d.cfg"


def test_shipped_haproxy_config(hosts, scratch):
    """haproxy/pop3d.cfg is valid, balances by leastconn with
    send-proxy-v2 and a tcp-check that expects +OK, outlasts pop3d's
    10-minute autologout, and, rewritten only for addresses (and without
    its chroot, user and daemon lines), carries sessions to two hosts."""
    text = SHIPPED.read_text()
    r = subprocess.run(["haproxy", "-c", "-f", str(SHIPPED)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"(?m)^\s*balance leastconn$", text)
    assert re.search(r"(?m)^\s*tcp-check expect string \+OK$", text)
    servers = re.findall(r"(?m)^\s*server (\S+) (\S+) (.*)$", text)
    assert len(servers) == 2 and \
        all("send-proxy-v2" in s[2] and "check" in s[2] for s in servers)
    for t in ("client", "server"):
        m = re.search(rf"(?m)^\s*timeout {t} (\d+)m$", text)
        assert m and int(m.group(1)) > 10, f"timeout {t}"
    la, lb = plain_launchers(hosts)
    port = free_port(HAPROXY_ADDR)
    cfg = re.sub(r"(?m)^\s*(chroot|user|group|daemon|log /dev/log).*\n",
                 "", text)
    cfg = cfg.replace("bind :110", f"bind {HAPROXY_ADDR}:{port}")
    for (name, _, rest), (h, la_) in zip(servers, ((hosts.a, la),
                                                     (hosts.b, lb))):
        cfg = re.sub(rf"(?m)^(\s*server {name}) \S+ ",
                     rf"\1 {h.addr}:{la_.port} ", cfg)
    path = scratch / "shipped-haproxy.cfg"
    path.write_text(cfg)
    with open(scratch / "shipped-haproxy.log", "wb") as err:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(path)],
                                stdout=err, stderr=err,
                                stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: proc.poll() is not None or
                 port_in_listen(HAPROXY_ADDR, port), 10, "haproxy")
        assert proc.poll() is None, (scratch / "shipped-haproxy.log") \
            .read_text()
        for _ in range(2):
            c = Pop3.tcp(HAPROXY_ADDR, port)
            assert c.line() == "+OK pop3d ready"
            # The v2 header reached pop3d (which has no -P here).
            assert c.until_eof().endswith(b"+OK pop3d signing off\r\n")
            c.close()
    finally:
        stop_pid(proc)
        la.stop()
        lb.stop()
