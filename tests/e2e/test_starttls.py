"""POP3 with STARTTLS (STLS, RFC 2595) through stunnel's protocol = pop3
in server mode, with the shipped stunnel/pop3-starttls.conf rewritten only
for the port, the paths, the logging and the program stunnel runs (the
harness's pop3d with its test options, after the shipped execArgs).

What stunnel 5.68 does there, and the tests hold it to: it relays pop3d's
greeting, answers CAPA before TLS with STLS alone, and closes the
connection on any other command before STLS, so a client that does not
start TLS cannot send a password at all; after STLS and the handshake the
client talks to pop3d.  Clients: curl --ssl-reqd pop3://, fetchmail with
sslproto TLS1.2+ (STARTTLS required), mpop with tls_starttls, poplib.

-c behind it: with the shipped exec= and -T, a client that did STLS logs
in with USER/PASS; -c without -T refuses it (pop3d cannot see stunnel's
TLS, which is why the example passes -T); and with the connect=
alternative, pop3d -c on loopback takes stunnel's connection from
127.0.0.1 as protected.
"""
import os
import poplib
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from test_clients import (check_stored, chown_tree, files, nobody_home,
                          run, setup_mailbox)
from test_launchers import free_port, stop
from test_tls import (STUNNEL, cert, exec_wrapper, serve_ssa, start_stunnel,
                      tls_context, wait_sessions_gone)

__all__ = ["cert", "nobody_home"]   # fixtures shared with those modules

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SHIPPED = REPO / "stunnel" / "pop3-starttls.conf"
REFUSED = (b"-ERR [AUTH] Cleartext logins are refused on this connection; "
           b"use TLS (port 995)")

pytestmark = pytest.mark.skipif(
    STUNNEL is None or shutil.which("openssl") is None,
    reason="needs stunnel4 and openssl (apt-get install stunnel4 openssl)")


def shipped_conf(tmp, cert, port, target):
    """stunnel/pop3-starttls.conf accepting on 127.0.0.1:port; target is
    ("exec", program, [pop3d options before the shipped ones]) or
    ("connect", port2), the shipped alternative."""
    src = SHIPPED.read_text()
    assert re.search(r"(?m)^protocol\s*=\s*pop3$", src), src
    assert re.search(r"(?m)^foreground\s*=\s*yes$", src), src
    assert not re.search(r"(?m)^set[ug]id\s*=", src), \
        "exec= of pop3d needs stunnel to stay root"
    crt, key = cert
    subs = [
        (r"(?m)^pid\s*=.*$",
         f"pid = {tmp}/stunnel.pid\ndebug = 5\noutput = {tmp}/stunnel.log"),
        (r"(?m)^accept\s*=\s*110$", f"accept = 127.0.0.1:{port}"),
        (r"(?m)^cert\s*=.*$", f"cert = {crt}"),
        (r"(?m)^key\s*=.*$", f"key = {key}"),
    ]
    m = re.search(r"(?m)^execArgs\s*=\s*pop3d(.*)$", src)
    assert m and m.group(1).split() == ["-T"], m
    assert re.search(r"(?m)^exec\s*=\s*/usr/local/sbin/pop3d$", src), src
    if target[0] == "exec":
        prog, args = target[1], target[2]
        subs.append((r"(?m)^exec\s*=.*$", f"exec = {prog}"))
        subs.append((r"(?m)^execArgs\s*=\s*pop3d",
                     "execArgs = pop3d " + " ".join(args)))
    else:
        assert re.search(r"(?m)^;\s*connect\s*=\s*127\.0\.0\.1:1110$", src)
        subs.append((r"(?m)^exec\s*=.*\n", ""))
        subs.append((r"(?m)^execArgs\s*=.*$",
                     f"connect = 127.0.0.1:{target[1]}"))
    conf = src
    for pat, rep in subs:
        conf, n = re.subn(pat, rep.replace("\\", "\\\\"), conf)
        assert n == 1, f"{pat!r} matched {n} times in {SHIPPED.name}"
    path = tmp / "stunnel.conf"
    path.write_text(conf)
    return path


class Tunnel:
    """stunnel with the shipped STARTTLS example on 127.0.0.1:port, in
    front of pop3d run by exec= (args: pop3d's options, replacing the
    shipped ones when replace is true) or by connect= to pop3d under
    systemd-socket-activate on another port."""

    def __init__(self, env, cert, mode="exec", args=(), replace=False):
        self.env = env
        self.port = free_port()
        self.ssa = None
        if mode == "exec":
            opts = env.argv()[1:] + list(args)
            target = ("exec", exec_wrapper(env), opts)
            self.log = env.tmp / "pop3d-exec.log"
        else:
            port2 = free_port()
            self.ssa, self.log = serve_ssa(env, port2, list(args))
            target = ("connect", port2)
        conf = shipped_conf(env.tmp, cert, self.port, target)
        if replace:
            # pop3d's options without the shipped -T.
            text = re.sub(r"(?m)^(execArgs = .*) -T$", r"\1", conf.read_text())
            conf.write_text(text)
        try:
            self.proc = start_stunnel(env.tmp, conf, self.port)
        except BaseException:
            if self.ssa is not None:
                stop(self.ssa)
            raise
        self.launcher = self.ssa if self.ssa is not None else self.proc

    def pop3d_log(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def idle(self):
        wait_sessions_gone(self.launcher.pid)

    def stop(self):
        stop(self.proc)
        if self.ssa is not None:
            stop(self.ssa)


@pytest.fixture
def tunnel(pop3d_env, cert):
    made = []

    def start(**kw):
        t = Tunnel(pop3d_env, cert, **kw)
        made.append(t)
        return t
    yield start
    for t in made:
        t.stop()


def curl(cert, port, path, ssl_reqd=True, user="alice:secret"):
    argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(cert[0]),
            "--resolve", f"localhost:{port}:127.0.0.1", "-u", user]
    if ssl_reqd:
        argv.append("--ssl-reqd")
    argv.append(f"pop3://localhost:{port}/{path}")
    return subprocess.run(argv, capture_output=True, timeout=30,
                          env={"PATH": PATH})


def starttls(port, cert):
    """poplib over STLS: (client, CAPA before TLS, CAPA after).  The
    handshake is poplib.POP3.stls()'s without its own CAPA: stunnel takes
    one CAPA before STLS and closes the connection on a second."""
    p = poplib.POP3("127.0.0.1", port, timeout=10)
    before = p.capa()
    assert p._shortcmd("STLS").startswith(b"+OK"), before
    p.sock = tls_context(cert).wrap_socket(p.sock,
                                           server_hostname="127.0.0.1")
    p.file = p.sock.makefile("rb")
    p._tls_established = True
    assert p.sock.version() in ("TLSv1.2", "TLSv1.3")
    return p, before, p.capa()


def read_reply_or_close(sock):
    """The next line from the server, or b"" once it has closed."""
    buf = b""
    while not buf.endswith(b"\n"):
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            return b""
        if not data:
            return buf
        buf += data
    return buf


# ---- clients that start TLS ----------------------------------------------------

def test_curl_ssl_reqd_retrieves(pop3d_env, tunnel, cert):
    path, mbox, msgs = setup_mailbox(pop3d_env)
    t = tunnel()
    r = curl(cert, t.port, "1")
    assert r.returncode == 0, (r.returncode, r.stderr, t.pop3d_log())
    first = re.search(rb"(?m)^Message-ID: (.*)$", mbox).group(1).decode()
    assert check_stored([r.stdout], msgs, set()) == [first]
    r = curl(cert, t.port, "")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(msgs), r.stdout
    t.idle()
    log = t.pop3d_log()
    assert log.count("pop3d: login ok: alice from 127.0.0.1\n") == 2, log
    assert path.read_bytes() == mbox


def test_poplib_stls_then_pop3d(pop3d_env, tunnel, cert):
    """Before TLS, stunnel's CAPA lists STLS alone; after it, pop3d's own
    list (which has no STLS: pop3d does no TLS itself)."""
    path, mbox, msgs = setup_mailbox(pop3d_env)
    t = tunnel()
    p, before, after = starttls(t.port, cert)
    try:
        assert p.getwelcome().startswith(b"+OK pop3d ready"), p.getwelcome()
        assert list(before) == ["STLS"], before
        assert "STLS" not in after and "USER" in after, after
        assert p.user("alice") == b"+OK Send your password"
        assert p.pass_("secret").startswith(b"+OK Maildrop has 5 messages")
        assert p.stat()[0] == len(msgs)
        assert p.quit() == b"+OK pop3d signing off (5 messages left)"
    finally:
        p.close()
    t.idle()
    assert path.read_bytes() == mbox


def test_fetchmail_starttls(pop3d_env, tunnel, cert, nobody_home):
    """fetchmail without --ssl but with sslproto TLS1.2+ requires STARTTLS
    (fetchmail(1), --sslproto); sslcertck with the test's certificate."""
    assert shutil.which("fetchmail"), "apt-get install fetchmail"
    path, mbox, msgs = setup_mailbox(pop3d_env)
    t = tunnel()
    home = nobody_home
    shutil.copy(cert[0], home / "ca.pem")
    out = home / "out"
    out.mkdir()
    mda = home / "store"
    mda.write_text('#!/bin/sh\nexec cat >"$(mktemp "$1/msg.XXXXXX")"\n')
    mda.chmod(0o755)
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 with proto POP3 and port {t.port}:\n"
        '  user "alice" there with password "secret" is "nobody" here\n'
        "  options keep norewrite sslproto 'TLS1.2+' sslcertck\n"
        f"  sslcertfile {home}/ca.pem sslcommonname localhost\n"
        f'  mda "{mda} {out}"\n')
    rc.chmod(0o600)
    chown_tree(home)
    env = {"PATH": PATH, "HOME": str(home), "FETCHMAILHOME": str(home),
           "FETCHMAILUSER": "nobody", "LC_ALL": "C"}
    code, log = run(["fetchmail", "-f", str(rc), "--nosyslog", "-v"], env,
                    cwd=home, user=65534)
    assert re.search(r"POP3> STLS", log), log
    stored = [p.read_bytes() for p in files(out)]
    assert check_stored(stored, msgs, {"received"}) == sorted(msgs), log
    t.idle()
    assert "pop3d: login ok: alice from 127.0.0.1\n" in t.pop3d_log()
    assert path.read_bytes() == mbox


def test_mpop_starttls(pop3d_env, tunnel, cert):
    assert shutil.which("mpop"), "apt-get install mpop"
    path, mbox, msgs = setup_mailbox(pop3d_env)
    t = tunnel()
    home = pop3d_env.tmp / "mpop"
    md = home / "md"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    cfg = home / "mpoprc"
    cfg.write_text(
        "defaults\n"
        "account test\n"
        "host 127.0.0.1\n"
        f"port {t.port}\n"
        "tls on\n"
        "tls_starttls on\n"
        f"tls_trust_file {cert[0]}\n"
        "tls_host_override localhost\n"
        "auth user\n"
        "user alice\n"
        "password secret\n"
        "keep on\n"
        f"uidls_file {home}/uidls\n"
        f"delivery maildir {md}\n")
    cfg.chmod(0o600)
    code, log = run(["mpop", "-C", str(cfg), "--debug", "test"],
                    {"PATH": PATH, "HOME": str(home), "LC_ALL": "C"},
                    cwd=home)
    assert "--> STLS" in log, log
    stored = [p.read_bytes() for p in files(md / "new")]
    assert check_stored(stored, msgs, {"received"}) == sorted(msgs), log
    t.idle()
    assert "pop3d: login ok: alice from 127.0.0.1\n" in t.pop3d_log()
    assert path.read_bytes() == mbox


# ---- clients that do not ---------------------------------------------------------

@pytest.mark.parametrize("command", [b"USER alice", b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
                                     b"APOP alice 0123456789abcdef0123456789abcdef",
                                     b"STAT"],
                         ids=["USER", "AUTH-PLAIN", "APOP", "STAT"])
def test_no_command_before_stls(pop3d_env, tunnel, command):
    """stunnel closes the connection on any command but CAPA and STLS
    before TLS: pop3d never sees it, and nobody logs in."""
    setup_mailbox(pop3d_env)
    t = tunnel()
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
        greeting = read_reply_or_close(s)
        assert greeting.startswith(b"+OK pop3d ready"), greeting
        s.sendall(b"CAPA\r\n")
        capa = b""
        while not capa.endswith(b"\r\n.\r\n"):
            data = s.recv(4096)
            assert data, capa
            capa += data
        assert capa.split(b"\r\n")[1:] == [b"STLS", b".", b""], capa
        s.sendall(command + b"\r\n")
        assert read_reply_or_close(s) == b""
        if command.startswith(b"USER"):
            try:
                s.sendall(b"PASS secret\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert read_reply_or_close(s) == b""
    t.idle()
    log = t.pop3d_log()
    assert "login ok" not in log and "login failed" not in log, log
    assert "pop3d: connection from 127.0.0.1\n" in log, log


def test_curl_without_starttls_cannot_log_in(pop3d_env, tunnel, cert):
    setup_mailbox(pop3d_env)
    t = tunnel()
    r = curl(cert, t.port, "1", ssl_reqd=False)
    assert r.returncode != 0 and r.stdout == b"", (r.returncode, r.stdout)
    t.idle()
    log = t.pop3d_log()
    assert "login ok" not in log and "login failed" not in log, log


# ---- -c behind it --------------------------------------------------------------

@pytest.mark.parametrize("mode,args,replace,allowed", [
    ("exec", [], False, True),            # the shipped execArgs: -T
    ("exec", ["-c"], False, True),        # -c -T
    ("exec", ["-c"], True, False),        # -c without -T
    ("connect", ["-c"], False, True),     # the connect= alternative
], ids=["exec-T", "exec-c-T", "exec-c", "connect-c"])
def test_cleartext_option_after_stls(pop3d_env, tunnel, cert, mode, args,
                                     replace, allowed):
    setup_mailbox(pop3d_env)
    t = tunnel(mode=mode, args=args, replace=replace)
    p, before, after = starttls(t.port, cert)
    try:
        if allowed:
            assert "USER" in after and "PLAIN" in after["SASL"], after
            assert p.user("alice") == b"+OK Send your password"
            assert p.pass_("secret").startswith(b"+OK Maildrop has 5 ")
        else:
            assert "USER" not in after and "SASL" not in after, after
            with pytest.raises(poplib.error_proto) as e:
                p.user("alice")
            assert e.value.args[0] == REFUSED
        p.quit()
    finally:
        p.close()
    t.idle()
    log = t.pop3d_log()
    assert ("pop3d: login ok: alice from 127.0.0.1\n" in log) == allowed, log
