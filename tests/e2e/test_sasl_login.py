"""
AUTH LOGIN (draft-murchison-sasl-login), the mechanism Thunderbird falls
back to: "+ VXNlcm5hbWU6" ("Username:"), base64 of the name, "+
UGFzc3dvcmQ6" ("Password:"), base64 of the password; or the name as the
initial response of AUTH LOGIN, then only the password prompt.  It must
behave as AUTH PLAIN does: the same failure counting (one per exchange,
shared with USER/PASS and PLAIN), the same log lines, the cleartext policy
of -c, "*" to cancel, "=" for an empty response, and the same bound on a
continuation line.  Then two real clients that speak it: curl
(--login-options AUTH=LOGIN, with and without --sasl-ir) and mpop (auth
login).  fetchmail cannot: its --auth has no LOGIN for POP3.

pop3d runs in the harness of conftest.py (root mode under uid_wrapper:
monitor, pre-login process, checker, session).
"""
import base64
import re
import shutil

import pytest

from conftest import CAPA_LIST, Server, build_mbox
from test_clients import PATH, files, run, served, setup_mailbox  # noqa: F401

ASK_USER = "+ VXNlcm5hbWU6"
ASK_PASS = "+ UGFzc3dvcmQ6"
AUTH_FAIL = "-ERR [AUTH] Authentication failed"
AUTH_LAST = "-ERR [AUTH] Authentication failed; too many failures, closing"
SASL_BAD = "-ERR [AUTH] Invalid SASL response"
CANCELLED = "-ERR Authentication cancelled"
CLEARTEXT = ("-ERR [AUTH] Cleartext logins are refused on this connection; "
             "use TLS (port 995)")


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def start(env, args=(), timeout=30, **kw):
    srv = env.start(args, timeout, **kw)
    assert srv.reply() == "+OK pop3d ready"
    return srv


def auth_login(srv, user, password, initial=False):
    """One AUTH LOGIN exchange; returns the final reply."""
    if initial:
        assert srv.cmd(f"AUTH LOGIN {b64(user)}") == ASK_PASS
    else:
        assert srv.cmd("AUTH LOGIN") == ASK_USER
        assert srv.cmd(b64(user)) == ASK_PASS
    return srv.cmd(b64(password))


def quit_ok(srv):
    assert srv.cmd("QUIT").startswith("+OK pop3d signing off")
    assert srv.read_until_eof() == b""
    srv.wait(0)


@pytest.fixture
def box(pop3d_env):
    data, _, wires = build_mbox(2)
    pop3d_env.write_mbox(data)
    return pop3d_env, wires


def test_listed_in_capa_and_auth(box):
    env, _ = box
    srv = start(env)
    st, body = srv.multi("CAPA")
    assert body.split(b"\r\n")[:-1] == CAPA_LIST
    assert b"SASL PLAIN LOGIN" in CAPA_LIST
    assert srv.multi("AUTH") == ("+OK Methods follow", b"PLAIN\r\nLOGIN\r\n")
    quit_ok(srv)


@pytest.mark.parametrize("initial", [False, True], ids=["prompts", "initial"])
def test_login_ok(box, initial):
    env, wires = box
    srv = start(env)
    assert auth_login(srv, "alice", "secret", initial) == \
        f"+OK Maildrop has 2 messages ({sum(map(len, wires))} octets)"
    st, body = srv.multi("RETR 2")
    assert st == f"+OK {len(wires[1])} octets"
    quit_ok(srv)
    log = srv.log
    assert "pop3d: login ok: alice from local" in log, log
    assert "secret" not in log and b64("secret") not in log


def test_lowercase_and_pipelined(box):
    """The keyword in any case; the two answers sent with the command, in
    one write, as a pipelining client may."""
    env, _ = box
    srv = start(env)
    srv.send(f"auth login\r\n{b64('alice')}\r\n{b64('secret')}\r\nSTAT\r\n")
    assert srv.reply() == ASK_USER
    assert srv.reply() == ASK_PASS
    assert srv.reply().startswith("+OK Maildrop has 2 messages")
    assert srv.reply().startswith("+OK 2 ")
    quit_ok(srv)


def test_failures_counted_and_logged_like_plain(box):
    env, _ = box
    srv = start(env)
    assert auth_login(srv, "alice", "wrong1") == AUTH_FAIL
    assert auth_login(srv, "mallory", "wrong2", initial=True) == AUTH_FAIL
    assert srv.cmd("AUTH LOGIN") == ASK_USER
    assert srv.cmd(b64("alice")) == ASK_PASS
    assert srv.cmd(b64("wrong3")) == AUTH_LAST
    assert srv.read_until_eof() == b""
    srv.wait(1)
    log = srv.log
    assert log.count("pop3d: login failed: alice from local") == 2, log
    assert log.count("pop3d: login failed: unknown user from local") == 1
    assert "pop3d: too many failed logins from local" in log
    assert "mallory" not in log
    for pw in ("wrong1", "wrong2", "wrong3"):
        assert pw not in log and b64(pw) not in log


def test_failures_shared_with_pass_and_plain(box):
    """Three tries in all, whichever way each is made."""
    env, _ = box
    srv = start(env)
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS wrong") == AUTH_FAIL
    assert srv.cmd("AUTH PLAIN " + b64("\0alice\0wrong")) == AUTH_FAIL
    assert auth_login(srv, "alice", "wrong", initial=True) == AUTH_LAST
    assert srv.read_until_eof() == b""
    srv.wait(1)


def test_cancel_empty_and_bad_responses(box):
    env, _ = box
    srv = start(env)
    assert srv.cmd("AUTH LOGIN") == ASK_USER
    assert srv.cmd("*") == CANCELLED
    assert srv.cmd("AUTH LOGIN") == ASK_USER
    assert srv.cmd(b64("alice")) == ASK_PASS
    assert srv.cmd("*") == CANCELLED
    # "=" is the empty response: no user name at all.
    assert srv.cmd("AUTH LOGIN =") == SASL_BAD
    assert srv.cmd("AUTH LOGIN") == ASK_USER
    assert srv.cmd("=") == SASL_BAD
    # Not base64, or with the padding wrong; a name with a control byte.
    assert srv.cmd("AUTH LOGIN !!!!") == SASL_BAD
    assert srv.cmd("AUTH LOGIN YWxpY2U") == SASL_BAD
    assert srv.cmd("AUTH LOGIN " + b64("a\tb")) == SASL_BAD
    assert srv.cmd("AUTH LOGIN " + b64("alice")) == ASK_PASS
    assert srv.cmd(b64(b"sec\0ret")) == SASL_BAD
    # A line longer than a SASL line may be (2048 octets) is drained.
    assert srv.cmd("AUTH LOGIN") == ASK_USER
    assert srv.cmd("QUFB" * 600) == SASL_BAD
    # None of that was a try: the right password still gets in.
    assert auth_login(srv, "alice", "secret").startswith("+OK Maildrop has")
    quit_ok(srv)
    assert "login failed" not in srv.log


def test_empty_password_is_a_try(box):
    env, _ = box
    srv = start(env)
    assert srv.cmd("AUTH LOGIN " + b64("alice")) == ASK_PASS
    assert srv.cmd("=") == AUTH_FAIL
    quit_ok(srv)
    assert "pop3d: login failed: alice from local" in srv.log


def test_disconnect_and_timeout_at_a_prompt(box):
    env, _ = box
    srv = start(env)
    assert srv.cmd("AUTH LOGIN " + b64("alice")) == ASK_PASS
    srv.close()
    srv.wait(1)
    assert "premature disconnect, before login from local" in srv.log
    srv = start(env, timeout=1)
    assert srv.cmd("AUTH LOGIN") == ASK_USER
    assert srv.read_until_eof().startswith(CANCELLED.encode())
    srv.wait(1)
    assert "timeout, before login from local" in srv.log


@pytest.mark.parametrize("peer", [{"REMOTE_ADDR": "192.0.2.7"},
                                  {"REMOTE_ADDR": "2001:db8::7"}],
                         ids=["v4", "v6"])
def test_cleartext_policy_refuses_it(box, peer):
    """-c on a connection not known to be protected: LOGIN is refused as
    PLAIN and USER/PASS are, before any prompt, and is not listed."""
    env, _ = box
    e = dict(env.env(), **peer)
    srv = Server(env.argv(["-c"]), e, env.tmp / "pop3d-c.log",
                 use_pipes=True)
    env.servers.append(srv)
    assert srv.reply() == "+OK pop3d ready"
    st, body = srv.multi("CAPA")
    assert not any(l.startswith(b"SASL") for l in body.split(b"\r\n"))
    assert srv.multi("AUTH") == ("+OK Methods follow", b"")
    assert srv.cmd("AUTH LOGIN") == CLEARTEXT
    assert srv.cmd("AUTH LOGIN " + b64("alice")) == CLEARTEXT
    assert srv.cmd("auth login") == CLEARTEXT
    assert srv.cmd("QUIT") == "+OK pop3d signing off"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    assert "login ok" not in srv.log and "login failed" not in srv.log


# ---- real clients ------------------------------------------------------------

@pytest.mark.parametrize("sasl_ir", [False, True], ids=["prompts", "sasl-ir"])
def test_curl_auth_login(pop3d_env, served, sasl_ir):
    assert shutil.which("curl"), "apt-get install curl"
    path, mbox, msgs = setup_mailbox(pop3d_env)
    srv = served()
    url = f"pop3://127.0.0.1:{srv.port}"
    argv = ["curl", "-sS", "-v", "--max-time", "10", "-u", "alice:secret",
            "--login-options", "AUTH=LOGIN"]
    if sasl_ir:
        argv.append("--sasl-ir")
    code, log = run(argv + [f"{url}/1"], {"PATH": PATH})
    srv.idle()
    # curl, from its side: LOGIN was the mechanism, as asked.
    want = f"> AUTH LOGIN {b64('alice')}\r" if sasl_ir else "> AUTH LOGIN\r"
    assert want in log, log
    assert "< " + ASK_PASS in log, log
    assert ("< " + ASK_USER in log) != sasl_ir, log
    assert "> USER" not in log and "AUTH PLAIN" not in log, log
    # The first message came through (curl writes it to stdout).
    first = next(iter(msgs.values())).decode()
    assert first.replace("\n", "\r\n").split("\r\n\r\n")[0] in log, log
    assert path.read_bytes() == mbox
    text = srv.text()
    assert "pop3d: login ok: alice from 127.0.0.1" in text, text
    assert "secret" not in text
    assert srv.statuses() == ["0"], text


def test_curl_auth_login_wrong_password(pop3d_env, served):
    setup_mailbox(pop3d_env)
    srv = served()
    code, log = run(["curl", "-sS", "-v", "--max-time", "10",
                     "-u", "alice:wrong", "--login-options", "AUTH=LOGIN",
                     f"pop3://127.0.0.1:{srv.port}/"], {"PATH": PATH},
                    expect=(67,))    # CURLE_LOGIN_DENIED
    srv.idle()
    assert "> AUTH LOGIN" in log, log
    assert "pop3d: login failed: alice from 127.0.0.1" in srv.text()


def test_mpop_auth_login(pop3d_env, served):
    assert shutil.which("mpop"), "apt-get install mpop"
    path, mbox, msgs = setup_mailbox(pop3d_env)
    srv = served()
    home = pop3d_env.tmp / "mpop"
    md = home / "md"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    cfg = home / "mpoprc"
    cfg.write_text(
        "defaults\n"
        "account test\n"
        "host 127.0.0.1\n"
        f"port {srv.port}\n"
        "tls off\n"
        "auth login\n"
        "user alice\n"
        "password secret\n"
        "keep on\n"
        f"uidls_file {home}/uidls\n"
        f"delivery maildir {md}\n")
    cfg.chmod(0o600)
    code, log = run(["mpop", "-C", str(cfg), "--debug", "test"],
                    {"PATH": PATH, "HOME": str(home), "LC_ALL": "C"},
                    cwd=home)
    srv.idle()
    log = log.replace("\r\n", "\n")
    assert re.search(r"--> AUTH LOGIN\b", log), log
    assert "<-- " + ASK_PASS in log, log
    assert "--> USER" not in log, log
    assert len(files(md / "new")) == len(msgs), log
    assert path.read_bytes() == mbox
    assert "pop3d: login ok: alice from 127.0.0.1" in srv.text()
    assert srv.statuses() == ["0"], srv.text()
