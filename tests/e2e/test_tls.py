"""pop3d behind stunnel: POP3 over implicit TLS (RFC 8314) on 127.0.0.1,
in the two set-ups the project ships in stunnel/pop3s.conf:

- exec=: stunnel runs pop3d itself for each connection, on one end of a
  socket pair, and names the client in REMOTE_HOST/REMOTE_PORT.  Debian's
  stunnel 5.68 makes that pair with AF_INET sockets on 127.0.0.1, not
  AF_UNIX: the socket names stunnel, only REMOTE_HOST names the client;
- connect=: stunnel connects to pop3d served on 127.0.0.1 by systemd socket
  activation (systemd-socket-activate --inetd -a, as test_launchers.py).

The shipped stunnel/pop3s.conf is used, rewritten only for the ports, the
paths, the privilege lines (the test runs as root and keeps its files in a
root-only directory) and the logging.  A throwaway self-signed certificate
is made with openssl.  Clients: Python's poplib.POP3_SSL and curl pop3s://.
"""
import os
import poplib
import re
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import POP3D, REPO, make_message
from test_launchers import free_port, stop

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
SSA = shutil.which("systemd-socket-activate")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.skipif(
    STUNNEL is None or shutil.which("openssl") is None,
    reason="needs stunnel4 and openssl (apt-get install stunnel4 openssl)")

REFUSED = (b"-ERR [AUTH] Cleartext logins are refused on this connection; "
           b"use TLS (port 995)")


# ---- helpers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A throwaway self-signed certificate for localhost, 127.0.0.1, ::1:
    (cert path, key path)."""
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return crt, key


def listening(port, host="127.0.0.1"):
    """True once something listens on host:port, 127.0.0.1 or ::1 (read
    from /proc, so that no probe connection reaches stunnel or pop3d)."""
    table, addr = {"127.0.0.1": ("/proc/net/tcp", "0100007F"),
                   "::1": ("/proc/net/tcp6",
                           "00000000000000000000000001000000")}[host]
    want = f"{addr}:{port:04X}"
    with open(table) as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


def wait_listening(port, proc, log, deadline=10.0, host="127.0.0.1"):
    end = time.monotonic() + deadline
    while not listening(port, host):
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited with {proc.returncode}:\n"
                                 f"{log.read_text(errors='replace')}")
        if time.monotonic() > end:
            raise AssertionError(f"nothing listens on 127.0.0.1:{port}:\n"
                                 f"{log.read_text(errors='replace')}")
        time.sleep(0.05)


def children(pid):
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                       text=True)
    return r.stdout.split()


def wait_sessions_gone(pid, deadline=10.0):
    """Waits until the launcher `pid` has no child left, i.e. every pop3d
    it started has exited (and released its session lock)."""
    end = time.monotonic() + deadline
    while children(pid):
        assert time.monotonic() < end, \
            f"pop3d still running under {pid}: {children(pid)}"
        time.sleep(0.02)


def tls_messages():
    """Three messages: dot-stuffing in the first, a 300 kB one (many TLS
    records) last.  Returns (mbox, [chunks], [messages as stored, LF])."""
    bodies = [
        b"A line follows that is only a dot:\n.\n..two dots\n.x\nend\n",
        b"Short body.\n",
        b"".join(b"line %05d " % i + b"x" * 60 + b"\n" for i in range(4500)),
    ]
    chunks, msgs = [], []
    for i, body in enumerate(bodies, 1):
        chunk, wire = make_message(i, body)
        chunks.append(chunk)
        msgs.append(wire.replace(b"\r\n", b"\n"))
    return b"".join(chunks), chunks, msgs


def shipped_stunnel_conf(tmp, cert, port, target, host="127.0.0.1",
                         foreground=True):
    """stunnel/pop3s.conf with its ports and paths rewritten: it accepts on
    host:port; target is ("connect", port2) or ("exec", program, [args]).
    foreground = yes is added unless foreground is False."""
    src = (REPO / "stunnel" / "pop3s.conf").read_text()
    crt, key = cert
    fg = "foreground = yes\n" if foreground else ""
    subs = [
        # Root-only test directory: no privilege drop (as for exec=).
        (r"(?m)^setuid\s*=.*\n", ""),
        (r"(?m)^setgid\s*=.*\n", ""),
        (r"(?m)^pid\s*=.*$",
         f"pid = {tmp}/stunnel.pid\n{fg}debug = 5\n"
         f"output = {tmp}/stunnel.log"),
        (r"(?m)^accept\s*=\s*995$", f"accept = {host}:{port}"),
        (r"(?m)^cert\s*=.*$", f"cert = {crt}"),
        (r"(?m)^key\s*=.*$", f"key = {key}"),
    ]
    if target[0] == "connect":
        subs.append((r"(?m)^connect\s*=\s*127\.0\.0\.1:110$",
                     f"connect = 127.0.0.1:{target[1]}"))
    else:
        prog, args = target[1], target[2]
        # The shipped alternative: exec = .../pop3d, execArgs = pop3d -T.
        m = re.search(r"(?m)^;\s*exec\s*=\s*(\S+)$", src)
        assert m and m.group(1) == "/usr/local/sbin/pop3d", m
        m = re.search(r"(?m)^;\s*execArgs\s*=\s*pop3d(.*)$", src)
        assert m, "no execArgs in the shipped exec= alternative"
        subs.append((r"(?m)^connect\s*=\s*127\.0\.0\.1:110$",
                     f"exec = {prog}\nexecArgs = pop3d {' '.join(args)}"))
    conf = src
    for pat, rep in subs:
        conf, n = re.subn(pat, rep.replace("\\", "\\\\"), conf)
        assert n == 1, f"{pat!r} matched {n} times in stunnel/pop3s.conf"
    path = tmp / "stunnel.conf"
    path.write_text(conf)
    return path


def start_stunnel(tmp, conf, port, host="127.0.0.1"):
    log = tmp / "stunnel.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen([STUNNEL, str(conf)],
                                stdin=subprocess.DEVNULL, stdout=err,
                                stderr=err, env={"PATH": PATH})
    try:
        wait_listening(port, proc, log, host=host)
    except BaseException:
        stop(proc)
        raise
    return proc


def exec_wrapper(pop3d_env):
    """The program stunnel exec=s: sets the wrapper environment (stunnel
    passes its own environment plus REMOTE_HOST/REMOTE_PORT), records what
    stunnel gave it, and execs pop3d with its stderr (-d logs) in a file."""
    lines = ["#!/bin/sh"]
    rec = pop3d_env.tmp / "exec-env.txt"
    # The family of the socket on stdin, from its inode.
    lines.append('fd0=$(readlink /proc/$$/fd/0); ino=${fd0#socket:[}; '
                 'ino=${ino%]}; fam=other; '
                 'if awk -v i="$ino" \'$7 == i {f=1} END {exit !f}\' '
                 '/proc/net/unix; then fam=AF_UNIX; '
                 'elif cat /proc/net/tcp /proc/net/tcp6 | '
                 'awk -v i="$ino" \'$10 == i {f=1} END {exit !f}\'; '
                 'then fam=AF_INET; fi')
    lines.append(f"printf '%s %s %s %s\\n' \"$REMOTE_HOST\" \"$REMOTE_PORT\" "
                 f"\"$fd0\" \"$fam\" >>{rec}")
    for k, v in pop3d_env.env().items():
        lines.append(f"{k}='{v}'; export {k}")
    lines.append(f"exec {POP3D} \"$@\" 2>>{pop3d_env.tmp}/pop3d-exec.log")
    w = pop3d_env.tmp / "pop3d-exec"
    w.write_text("\n".join(lines) + "\n")
    w.chmod(0o755)
    return w


def serve_ssa(pop3d_env, port, args=()):
    """pop3d under systemd-socket-activate on 127.0.0.1:port; its -d log
    goes to the launcher's stderr, the returned log file."""
    assert SSA, "systemd-socket-activate missing: make check installs systemd"
    log = pop3d_env.tmp / "ssa.log"
    argv = [SSA, "--inetd", "-a", "-l", f"127.0.0.1:{port}"]
    for k, v in pop3d_env.env().items():
        argv += ["-E", f"{k}={v}"]
    argv += pop3d_env.argv(args)
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err,
                                env={"PATH": PATH})
    try:
        wait_listening(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, log


def tls_context(cert):
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def pop3s(port, cert, host="127.0.0.1"):
    """poplib.POP3_SSL to host:port, verifying the certificate (its
    subjectAltName has IP:127.0.0.1 and IP:::1)."""
    return poplib.POP3_SSL(host, port, context=tls_context(cert),
                           timeout=10)


def curl_pop3s(cert, port, path, user="alice:secret"):
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(cert[0]),
         "--resolve", f"localhost:{port}:127.0.0.1", "-u", user,
         f"pop3s://localhost:{port}/{path}"],
        capture_output=True, timeout=20, env={"PATH": PATH})
    assert r.returncode == 0, (r.returncode, r.stderr)
    return r.stdout


def fetch_over_tls(pop3d_env, cert, port, launcher):
    """curl retrieves message 1; poplib logs in, lists, retrieves every
    message, deletes two and quits; the mailbox keeps the third, in place."""
    data, chunks, msgs = tls_messages()
    wires = [m.replace(b"\n", b"\r\n") for m in msgs]
    path = pop3d_env.write_mbox(data)
    ino = path.stat().st_ino

    out = curl_pop3s(cert, port, "1")
    assert out.replace(b"\r\n", b"\n") == msgs[0]
    listing = curl_pop3s(cert, port, "")
    assert listing == b"".join(b"%d %d\r\n" % (i, len(w))
                               for i, w in enumerate(wires, 1))
    wait_sessions_gone(launcher.pid)

    p = pop3s(port, cert)
    try:
        assert p.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert p.getwelcome() == b"+OK pop3d ready"
        assert p.user("alice") == b"+OK Send your password"
        total = sum(map(len, wires))
        assert p.pass_("secret") == \
            f"+OK Maildrop has 3 messages ({total} octets)".encode()
        assert p.stat() == (3, total)
        resp, listing, _ = p.list()
        assert listing == [b"%d %d" % (i, len(w))
                           for i, w in enumerate(wires, 1)]
        for i, w in enumerate(wires, 1):
            resp, lines, octets = p.retr(i)
            assert resp == b"+OK %d octets" % len(w)
            assert b"".join(line + b"\r\n" for line in lines) == w
        assert p.dele(1) == b"+OK Message 1 deleted"
        assert p.dele(3) == b"+OK Message 3 deleted"
        assert p.quit() == b"+OK pop3d signing off (1 messages left)"
    finally:
        p.close()
    wait_sessions_gone(launcher.pid)
    assert path.read_bytes() == chunks[1]
    assert path.stat().st_ino == ino


def cleartext_session(port, cert):
    """Logs in with USER/PASS over TLS; returns the reply to USER (and
    closes), or the CAPA list and the login reply."""
    p = pop3s(port, cert)
    try:
        capa = p.capa()
        try:
            r = p.user("alice")
        except poplib.error_proto as e:
            p.quit()
            return capa, e.args[0]
        r = p.pass_("secret")
        assert p.stat()[0] == 1
        p.quit()
        return capa, r
    finally:
        p.close()


# ---- exec= -----------------------------------------------------------------

def test_stunnel_exec_pop3d(pop3d_env, cert):
    port = free_port()
    conf = shipped_stunnel_conf(pop3d_env.tmp, cert, port,
                                ("exec", exec_wrapper(pop3d_env),
                                 pop3d_env.argv()[1:]))
    proc = start_stunnel(pop3d_env.tmp, conf, port)
    try:
        fetch_over_tls(pop3d_env, cert, port, proc)
    finally:
        stop(proc)
    log = (pop3d_env.tmp / "pop3d-exec.log").read_text()
    # stunnel gave each pop3d a socket on stdin and named the client.
    seen = (pop3d_env.tmp / "exec-env.txt").read_text().splitlines()
    assert len(seen) == 3, seen
    for line in seen:
        host, rport, fd0, fam = line.split()
        assert host == "127.0.0.1" and rport.isdigit(), line
        assert fd0.startswith("socket:"), line
    # Never "local".  Here the client and stunnel's socket pair are both
    # 127.0.0.1; test_stunnel_exec_logs_remote_host tells them apart.
    assert log.count("pop3d: connection from 127.0.0.1\n") == 3, log
    assert log.count("pop3d: login ok: alice from 127.0.0.1\n") == 3, log
    assert "local" not in log, log
    assert "pop3d: alice: 2 (" in log and ") deleted, 1 (" in log, log


def test_stunnel_exec_logs_remote_host(pop3d_env, cert):
    """A client on ::1: stunnel exec= sets REMOTE_HOST=::1, and pop3d must
    log (and give PAM as PAM_RHOST) that client, not the address of the
    connection between stunnel and itself.  Debian's stunnel 5.68 hands the
    child one end of an AF_INET socket pair on 127.0.0.1 (not an AF_UNIX
    socket), so the socket alone names stunnel, never the client."""
    data, chunks, msgs = tls_messages()
    pop3d_env.write_mbox(chunks[1])
    port = free_port()
    conf = shipped_stunnel_conf(pop3d_env.tmp, cert, port,
                                ("exec", exec_wrapper(pop3d_env),
                                 pop3d_env.argv()[1:]), host="::1")
    proc = start_stunnel(pop3d_env.tmp, conf, port, host="::1")
    try:
        p = pop3s(port, cert, host="::1")
        try:
            assert p.user("alice") == b"+OK Send your password"
            assert p.pass_("secret").startswith(b"+OK Maildrop has 1 ")
            assert p.quit() == b"+OK pop3d signing off (1 messages left)"
        finally:
            p.close()
        wait_sessions_gone(proc.pid)
    finally:
        stop(proc)
    host, rport, fd0, fam = \
        (pop3d_env.tmp / "exec-env.txt").read_text().split()
    assert host == "::1"        # what stunnel told pop3d in REMOTE_HOST
    log = (pop3d_env.tmp / "pop3d-exec.log").read_text()
    why = f"stdin is {fam} {fd0}, REMOTE_HOST={host}; pop3d logged:\n{log}"
    assert "pop3d: connection from ::1\n" in log, why
    assert "pop3d: login ok: alice from ::1\n" in log, why


@pytest.mark.parametrize("args,allowed", [(["-c"], False),
                                          (["-c", "-T"], True)],
                         ids=["c", "c-T"])
def test_stunnel_exec_cleartext_needs_T(pop3d_env, cert, args, allowed):
    """With -c, pop3d behind stunnel exec= must refuse USER unless -T marks
    the connection as protected, as the shipped execArgs = pop3d -T does
    (README: -c allows cleartext from loopback, "stunnel connect=", or
    with -T, "behind TLS, e.g. stunnel exec=").  The socket pair stunnel
    gives pop3d is no loopback client: the client is whatever REMOTE_HOST
    names, and a launcher's word proves nothing."""
    data, chunks, msgs = tls_messages()
    pop3d_env.write_mbox(chunks[1])
    port = free_port()
    conf = shipped_stunnel_conf(pop3d_env.tmp, cert, port,
                                ("exec", exec_wrapper(pop3d_env),
                                 pop3d_env.argv(args)[1:]))
    proc = start_stunnel(pop3d_env.tmp, conf, port)
    try:
        capa, r = cleartext_session(port, cert)
        wait_sessions_gone(proc.pid)
    finally:
        stop(proc)
    log = (pop3d_env.tmp / "pop3d-exec.log").read_text()
    assert "pop3d: connection from 127.0.0.1\n" in log, log
    if allowed:
        assert r.startswith(b"+OK Maildrop has 1 messages"), r
        assert "USER" in capa and "PLAIN" in capa["SASL"], capa
        assert "pop3d: login ok: alice from 127.0.0.1\n" in log, log
    else:
        seen = (pop3d_env.tmp / "exec-env.txt").read_text().split()
        assert r == REFUSED, (
            f"-c without -T accepted USER behind stunnel exec=: {r!r}; "
            f"pop3d's stdin is {seen[3]} {seen[2]} (REMOTE_HOST={seen[0]} "
            f"REMOTE_PORT={seen[1]}), which pop3d took for a loopback "
            f"client\n{log}")
        assert "USER" not in capa and "SASL" not in capa, capa
        assert "login ok" not in log, log


# ---- connect= --------------------------------------------------------------

def test_stunnel_connect_to_socket_activated_pop3d(pop3d_env, cert):
    port, port2 = free_port(), free_port()
    ssa, ssa_log = serve_ssa(pop3d_env, port2)
    try:
        conf = shipped_stunnel_conf(pop3d_env.tmp, cert, port,
                                    ("connect", port2))
        proc = start_stunnel(pop3d_env.tmp, conf, port)
        try:
            fetch_over_tls(pop3d_env, cert, port, ssa)
        finally:
            stop(proc)
    finally:
        stop(ssa)
    log = ssa_log.read_text()
    assert log.count("pop3d: connection from 127.0.0.1\n") == 3, log
    assert log.count("pop3d: login ok: alice from 127.0.0.1\n") == 3, log
    assert "local" not in log, log
    assert "pop3d: alice: 2 (" in log and ") deleted, 1 (" in log, log
    # Every session ended with a committed QUIT.
    assert re.findall(r"Child \d+ died with code (\d+)", log) == ["0"] * 3


def test_stunnel_connect_cleartext_from_loopback(pop3d_env, cert):
    """With -c, pop3d behind stunnel connect= sees stunnel's connection
    from 127.0.0.1, which is protected: USER/PASS are accepted."""
    data, chunks, msgs = tls_messages()
    pop3d_env.write_mbox(chunks[1])
    port, port2 = free_port(), free_port()
    ssa, ssa_log = serve_ssa(pop3d_env, port2, ["-c"])
    try:
        conf = shipped_stunnel_conf(pop3d_env.tmp, cert, port,
                                    ("connect", port2))
        proc = start_stunnel(pop3d_env.tmp, conf, port)
        try:
            capa, r = cleartext_session(port, cert)
            wait_sessions_gone(ssa.pid)
        finally:
            stop(proc)
    finally:
        stop(ssa)
    assert r.startswith(b"+OK Maildrop has 1 messages"), r
    assert "USER" in capa, capa
    assert "pop3d: login ok: alice from 127.0.0.1\n" in ssa_log.read_text()


# ---- the shipped example under Debian's stunnel unit -----------------------

def test_shipped_conf_runs_under_debian_stunnel_unit(pop3d_env, cert):
    """Debian's stunnel4 starts /etc/stunnel/NAME.conf with the template
    stunnel@.service (README.Debian: systemctl enable stunnel@NAME), a
    Type=simple service whose ExecStart is stunnel4 itself: the
    configuration must keep stunnel in the foreground, or systemd takes the
    exit of the main process for the end of the service and stops the
    tunnel.  The shipped example, rewritten only for ports and paths, is
    started the way the unit starts it."""
    unit = Path("/lib/systemd/system/stunnel@.service")
    if not unit.exists():
        pytest.skip("no stunnel@.service in this stunnel4 package")
    text = unit.read_text()
    assert re.search(
        r"(?m)^ExecStart=/usr/bin/stunnel4 /etc/stunnel/%i\.conf$", text), text
    assert re.findall(r"(?m)^Type=(\w+)", text) in ([], ["simple"]), text
    port, port2 = free_port(), free_port()
    conf = shipped_stunnel_conf(pop3d_env.tmp, cert, port,
                                ("connect", port2), foreground=False)
    pidfile = pop3d_env.tmp / "stunnel.pid"
    proc = subprocess.Popen([STUNNEL, str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={"PATH": PATH})
    try:
        rc = proc.wait(2)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        if proc.poll() is None:
            stop(proc)
    if rc is not None:
        # It went into the background: end the daemon it left (ours).
        end = time.monotonic() + 5
        while not pidfile.exists() and time.monotonic() < end:
            time.sleep(0.05)
        if pidfile.exists():
            daemon = int(pidfile.read_text().split()[0])
            os.kill(daemon, signal.SIGTERM)
            while Path(f"/proc/{daemon}").exists() and \
                    time.monotonic() < end + 5:
                time.sleep(0.05)
        pytest.fail(f"stunnel with the shipped pop3s.conf left the "
                    f"foreground (exit {rc}): under stunnel@pop3s.service "
                    f"(Type=simple) systemd would stop the tunnel at once; "
                    f"the example needs 'foreground = yes'")


def test_shipped_conf_certificate_pointer():
    """stunnel/pop3s.conf sends the reader to pop3d(8) for the certificate
    and key: the man page must then say how to make them."""
    conf = (REPO / "stunnel" / "pop3s.conf").read_text()
    assert "pop3d(8)" in conf and re.search(r"(?i)certificate", conf)
    man = (REPO / "pop3d.8").read_text()
    assert re.search(r"(?i)\bcertificate\b", man) and \
        re.search(r"\b(openssl|certbot|make-ssl-cert)\b", man), \
        "pop3d.8 shows cert = and key = paths but not how to make them"