"""pop3d under the launchers it is deployed with, on 127.0.0.1: systemd
socket activation (Accept=yes, as systemd-socket-activate --inetd -a) and
xinetd running the project's own xinetd.d/pop3d, rewritten only for the
port and the paths.  A real TCP connection and Python's poplib."""
import os
import poplib
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import POP3D, REPO, build_mbox


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def connect(port, deadline=10.0):
    """poplib.POP3 on 127.0.0.1:port, retrying while the launcher starts."""
    end = time.monotonic() + deadline
    while True:
        try:
            return poplib.POP3("127.0.0.1", port, timeout=10)
        except (ConnectionRefusedError, poplib.error_proto, EOFError,
                ConnectionResetError):
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def full_session(pop3d_env, port):
    """Logs in through PAM, lists, retrieves, deletes and quits; checks the
    mailbox afterwards."""
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    p = connect(port)
    assert p.getwelcome() == b"+OK pop3d ready"
    assert p.user("alice").startswith(b"+OK")
    assert p.pass_("secret") == \
        f"+OK Maildrop has 3 messages ({sum(map(len, wires))} octets)".encode()
    assert p.stat() == (3, sum(map(len, wires)))
    resp, listing, _ = p.list()
    assert listing == [f"{i} {len(w)}".encode()
                       for i, w in enumerate(wires, 1)]
    for i, w in enumerate(wires, 1):
        resp, lines, octets = p.retr(i)
        assert resp == f"+OK {len(w)} octets".encode()
        body = b"".join(line + b"\r\n" for line in lines)
        assert body == w
    assert p.dele(2) == b"+OK Message 2 deleted"
    assert p.quit() == b"+OK pop3d signing off (2 messages left)"
    assert path.read_bytes() == chunks[0] + chunks[2]


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_systemd_socket_activation(pop3d_env):
    exe = shutil.which("systemd-socket-activate")
    assert exe, "systemd-socket-activate missing: make check installs systemd"
    port = free_port()
    log = pop3d_env.tmp / "ssa.log"
    argv = [exe, "--inetd", "-a", "-l", f"127.0.0.1:{port}"]
    for k, v in pop3d_env.env().items():
        argv += ["-E", f"{k}={v}"]
    argv += pop3d_env.argv()
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err,
                                env={"PATH": os.environ["PATH"]})
    try:
        full_session(pop3d_env, port)
    finally:
        stop(proc)
    text = log.read_text()
    assert "pop3d: connection from 127.0.0.1" in text
    assert "pop3d: login ok: alice from 127.0.0.1" in text
    assert "pop3d: alice: 1 (" in text and ") deleted, 2 (" in text


def xinetd_config(pop3d_env, port, name="pop3d"):
    """The shipped service file with its port and paths rewritten."""
    src = (REPO / "xinetd.d" / name).read_text()
    env = pop3d_env.env()
    env["LD_PRELOAD"] = env["LD_PRELOAD"].replace(" ", ":")
    # No -d: xinetd puts the socket on stderr too, so logs go to syslog.
    # The shipped server_args (if any) come first.
    shipped = re.search(r"server_args\s*=\s*(.*)", src)
    args = " ".join(([shipped.group(1).strip()] if shipped else []) +
                    [a for a in pop3d_env.argv()[1:] if a != "-d"])
    src = re.sub(r"\s*server_args\s*=.*", "", src)
    extra = (f"\tport\t\t= {port}\n"
             "\ttype\t\t= UNLISTED\n" +
             ("" if re.search(r"(?m)^\s*bind\s*=", src) else
              "\tbind\t\t= 127.0.0.1\n") +
             f"\tserver_args\t= {args}\n"
             f"\tenv\t\t= {' '.join(f'{k}={v}' for k, v in env.items())}\n")
    svc, n = re.subn(r"server\s*=\s*\S+", f"server\t\t= {POP3D}", src)
    assert n == 1
    svc, n = re.subn(r"log_type\s*=.*", "log_type\t= FILE "
                     f"{pop3d_env.tmp}/xinetd-service.log", svc)
    assert n == 1
    svc = svc.replace("}", extra + "}", 1)
    svc = re.sub(r"service pop3\b", "service pop3d-test", svc)
    conf = pop3d_env.tmp / "xinetd.conf"
    conf.write_text("defaults\n{\n\tinstances = 10\n}\n" + svc)
    return conf


@pytest.mark.parametrize("name", ["pop3d", "pop3s"])
def test_xinetd_runs_the_shipped_service(pop3d_env, name):
    """xinetd.d/pop3d, and xinetd.d/pop3s (127.0.0.1 only, -c: cleartext
    from loopback, i.e. from stunnel's connect=)."""
    exe = shutil.which("xinetd") or "/usr/sbin/xinetd"
    assert os.path.exists(exe), "xinetd missing: make check installs it"
    port = free_port()
    conf = xinetd_config(pop3d_env, port, name)
    log = pop3d_env.tmp / "xinetd.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [exe, "-dontfork", "-stayalive", "-f", str(conf),
             "-pidfile", str(pop3d_env.tmp / "xinetd.pid"),
             "-filelog", str(pop3d_env.tmp / "xinetd-main.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env={"PATH": os.environ["PATH"]})
    try:
        full_session(pop3d_env, port)
    finally:
        stop(proc)
    # xinetd logged the connection with the shipped log_on_success fields.
    svc_log = (pop3d_env.tmp / "xinetd-service.log").read_text()
    assert "START: pop3d-test" in svc_log and "from=127.0.0.1" in svc_log
