"""
Authentication end to end: PAM (pam_matrix through pam_wrapper) and the
-f password file of crypt(3) hashes; replies, failure counting, logs, the
PAM service name, uid 0, and that the session runs as the mail user.
"""
import functools
import os

import pytest

from conftest import (ALICE_UID, BOB_UID, MAIL_GID, build_mbox,
                      hash_password)

AUTH_FAIL = "-ERR [AUTH] Authentication failed"
AUTH_LAST = "-ERR [AUTH] Authentication failed; too many failures, closing"
AUTH_TEMP = "-ERR [SYS/TEMP] Authentication is unavailable, try again later"
BADFILE = "-ERR [SYS/PERM] Mailbox is not a regular file of yours"


def attempt(srv, user, password):
    assert srv.cmd(f"USER {user}") == "+OK Send your password"
    return srv.cmd(f"PASS {password}")


def start(env, args=()):
    srv = env.start(args)
    assert srv.reply() == "+OK pop3d ready"
    return srv


def quit_ok(srv):
    assert srv.cmd("QUIT").startswith("+OK pop3d signing off")
    assert srv.read_until_eof() == b""
    srv.wait(0)


# ---- PAM ---------------------------------------------------------------------

def test_pam_login_ok(pop3d_env):
    data, chunks, wires = build_mbox(2)
    pop3d_env.write_mbox(data)
    srv = start(pop3d_env)
    assert attempt(srv, "alice", "secret") == \
        f"+OK Maildrop has 2 messages ({sum(map(len, wires))} octets)"
    quit_ok(srv)
    assert "pop3d: login ok: alice from local" in srv.log
    assert "secret" not in srv.log


def test_wrong_password_then_right_one(pop3d_env):
    srv = start(pop3d_env, ["-v"])
    assert attempt(srv, "alice", "Wr0ngPassw0rd") == AUTH_FAIL
    assert attempt(srv, "alice", "An0therWr0ng") == AUTH_FAIL
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has")
    quit_ok(srv)
    log = srv.log
    assert log.count("pop3d: login failed: alice from local") == 2
    for pw in ("Wr0ngPassw0rd", "An0therWr0ng", "secret"):
        assert pw not in log


def test_unknown_user_same_reply_and_not_logged(pop3d_env):
    srv = start(pop3d_env, ["-v"])
    wrong = attempt(srv, "alice", "Wr0ngPassw0rd")
    unknown = attempt(srv, "mallory", "Mall0rysPassw0rd")
    assert wrong == AUTH_FAIL
    assert unknown == wrong
    quit_ok(srv)
    log = srv.log
    assert "pop3d: login failed: unknown user from local" in log, log
    assert "mallory" not in log, log
    assert "Mall0rysPassw0rd" not in log


def test_third_failure_closes(pop3d_env):
    srv = start(pop3d_env)
    assert attempt(srv, "alice", "bad1") == AUTH_FAIL
    assert attempt(srv, "nosuchuser", "bad2") == AUTH_FAIL
    # Commands that are not attempts do not count.
    assert srv.cmd("PASS bad") == "-ERR USER first"
    assert srv.cmd("NOOP") == "-ERR Command not valid in this state"
    assert attempt(srv, "alice", "bad3") == AUTH_LAST
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert "pop3d: too many failed logins from local" in srv.log
    for pw in ("bad1", "bad2", "bad3"):
        assert pw not in srv.log


def test_third_failure_closes_even_with_pipelined_input(pop3d_env):
    srv = pop3d_env.start()
    srv.send(b"USER alice\r\nPASS x1\r\nUSER alice\r\nPASS x2\r\n"
             b"USER alice\r\nPASS x3\r\nUSER alice\r\nPASS secret\r\nSTAT\r\n")
    out = srv.read_until_eof()
    assert out == (b"+OK pop3d ready\r\n" +
                   (b"+OK Send your password\r\n" + AUTH_FAIL.encode() +
                    b"\r\n") * 2 +
                   b"+OK Send your password\r\n" + AUTH_LAST.encode() +
                   b"\r\n")
    srv.wait(1)
    assert "login ok" not in srv.log


def test_user_allowed_for_another_service_only(pop3d_env):
    pop3d_env.add_pam_user("bob", "bobpass", service="other")
    srv = start(pop3d_env)
    assert attempt(srv, "bob", "bobpass") == AUTH_FAIL
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has")
    quit_ok(srv)
    assert "pop3d: login failed: bob from local" in srv.log
    assert "login ok: bob" not in srv.log


def test_service_name_option(pop3d_env):
    pop3d_env.add_service("pop3-alt")
    pop3d_env.add_pam_user("bob", "bobpass", service="pop3-alt")
    pop3d_env.write_mbox(build_mbox(1)[0], user="bob")
    srv = start(pop3d_env, ["-s", "pop3-alt"])
    assert attempt(srv, "alice", "secret") == AUTH_FAIL
    assert attempt(srv, "bob", "bobpass") == \
        f"+OK Maildrop has 1 messages ({len(build_mbox(1)[2][0])} octets)"
    quit_ok(srv)
    srv = start(pop3d_env)
    assert attempt(srv, "bob", "bobpass") == AUTH_FAIL
    srv.finish(1)


def test_uid0_user_refused(pop3d_env):
    root_box = pop3d_env.write_mbox(build_mbox(1)[0], user="toor", uid=0,
                                    gid=0)
    before = root_box.read_bytes(), os.stat(root_box).st_mtime_ns
    pop3d_env.add_pam_user("root", "rootpass")
    srv = start(pop3d_env)
    assert attempt(srv, "toor", "toorpass") == AUTH_FAIL
    assert attempt(srv, "root", "rootpass") == AUTH_FAIL
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has")
    quit_ok(srv)
    assert "toor: refusing to serve a mailbox as uid 0" in srv.log
    assert "root: refusing to serve a mailbox as uid 0" in srv.log
    assert "login ok: toor" not in srv.log
    assert (root_box.read_bytes(), os.stat(root_box).st_mtime_ns) == before
    assert not (pop3d_env.mail / "root").exists()


def test_uid0_refusal_not_logged_as_unknown_user(pop3d_env):
    """toor exists and gave the right password: the failure line must not
    call it an unknown user."""
    srv = start(pop3d_env)
    assert attempt(srv, "toor", "toorpass") == AUTH_FAIL
    srv.finish(1)
    assert "login failed: unknown user" not in srv.log, srv.log


def test_pam_user_without_system_account(pop3d_env):
    pop3d_env.add_pam_user("ghost", "boo")
    srv = start(pop3d_env)
    assert attempt(srv, "ghost", "boo") == AUTH_FAIL
    srv.finish(1)
    assert "login ok" not in srv.log


def test_password_with_spaces(pop3d_env):
    pop3d_env.add_pam_user("bob", "two  spaced words ")
    srv = start(pop3d_env)
    assert attempt(srv, "bob", "two spaced words") == AUTH_FAIL
    assert attempt(srv, "bob", "two  spaced words ").startswith(
        "+OK Maildrop has 0 messages")
    quit_ok(srv)


def test_session_runs_as_the_user(pop3d_env):
    """bob's session can open bob's mailbox and not a file of alice's at
    bob's path; alice's session cannot open a file of bob's."""
    data, chunks, wires = build_mbox(2)
    pop3d_env.write_mbox(data, user="bob", uid=BOB_UID)
    pop3d_env.write_mbox(data, user="alice", uid=BOB_UID)
    srv = start(pop3d_env)
    assert attempt(srv, "bob", "bobpass").startswith(
        "+OK Maildrop has 2 messages")
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    quit_ok(srv)
    assert pop3d_env.mailbox("bob").read_bytes() == chunks[1]
    srv = start(pop3d_env)
    assert attempt(srv, "alice", "secret") == BADFILE
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert pop3d_env.mailbox("alice").read_bytes() == data
    # Made alice's, it opens.
    os.chown(pop3d_env.mailbox("alice"), ALICE_UID, MAIL_GID)
    srv = start(pop3d_env)
    assert attempt(srv, "alice", "secret").startswith(
        "+OK Maildrop has 2 messages")
    quit_ok(srv)


def test_mailbox_template_with_home(pop3d_env):
    home = pop3d_env.home / "alice"
    home.mkdir()
    os.chown(home, ALICE_UID, ALICE_UID)
    data, chunks, wires = build_mbox(1)
    pop3d_env.write_mbox(data, path=home / "inbox")
    srv = pop3d_env.start(["-m", "%h/inbox"])
    assert srv.login() == \
        f"+OK Maildrop has 1 messages ({len(wires[0])} octets)"
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    quit_ok(srv)
    assert (home / "inbox").read_bytes() == b""


# ---- the -f password file ------------------------------------------------------

@functools.lru_cache(maxsize=None)
def cached_hash(pw, method):
    return hash_password(pw, method)


def write_passwd(env, lines):
    p = env.tmp / "pop3d.passwd"
    p.write_text("".join(l + "\n" for l in lines))
    os.chmod(p, 0o600)
    return p


@pytest.mark.parametrize("method", ["yescrypt", "sha512", "bcrypt"])
def test_passwd_file_hashes(pop3d_env, method):
    h = cached_hash("vpass", method)
    assert h.startswith({"yescrypt": "$y$", "sha512": "$6$",
                         "bcrypt": "$2b$"}[method])
    pf = write_passwd(pop3d_env, [f"vuser:{h}:alice:"])
    data, chunks, wires = build_mbox(2)
    pop3d_env.write_mbox(data, user="vuser", uid=ALICE_UID)
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "vuser", "vpasS") == AUTH_FAIL
    assert attempt(srv, "vuser", "vpass") == \
        f"+OK Maildrop has 2 messages ({sum(map(len, wires))} octets)"
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    quit_ok(srv)
    assert pop3d_env.mailbox("vuser").read_bytes() == chunks[0]
    assert "pop3d: login failed: vuser from local" in srv.log
    assert "pop3d: login ok: vuser from local" in srv.log
    assert "vpass" not in srv.log.replace("vuser", "")


def test_passwd_file_unknown_user_same_reply(pop3d_env):
    pf = write_passwd(pop3d_env, [f"vuser:{cached_hash('vpass', 'sha512')}"
                                  f":alice:"])
    srv = start(pop3d_env, ["-f", str(pf)])
    wrong = attempt(srv, "vuser", "nope")
    unknown = attempt(srv, "mallory", "vpass")
    assert wrong == AUTH_FAIL
    assert unknown == wrong
    quit_ok(srv)
    assert "pop3d: login failed: unknown user from local" in srv.log
    assert "mallory" not in srv.log


@pytest.mark.parametrize("field", ["!{h}", "*", "!", "", "*{h}", "!!"],
                         ids=["bang-hash", "star", "bang", "empty",
                              "star-hash", "bangbang"])
def test_passwd_file_locked_entries(pop3d_env, field):
    h = cached_hash("vpass", "sha512")
    pf = write_passwd(pop3d_env, [f"vuser:{field.format(h=h)}:alice:"])
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "vuser", "vpass") == AUTH_FAIL
    assert attempt(srv, "vuser", "") == AUTH_FAIL
    assert attempt(srv, "vuser", "!" + h) == AUTH_LAST
    srv.finish(1)
    assert "login ok" not in srv.log


def test_passwd_file_mailbox_field(pop3d_env):
    h = cached_hash("vpass", "sha512")
    virt = pop3d_env.tmp / "virt"
    virt.mkdir()
    os.chmod(virt, 0o755)
    pf = write_passwd(pop3d_env, [
        "# a comment line",
        "",
        f"v1:{h}:alice:{virt}/v1-box",
        f"v2:{h}:alice:{virt}/%u.mbox",
        f"v1:{cached_hash('other', 'sha512')}:bob:",
    ])
    d1, c1, w1 = build_mbox(1)
    d2, c2, w2 = build_mbox(2)
    pop3d_env.write_mbox(d1, path=virt / "v1-box", uid=ALICE_UID)
    pop3d_env.write_mbox(d2, path=virt / "v2.mbox", uid=ALICE_UID)
    for user, n, w in (("v1", 1, w1), ("v2", 2, w2)):
        srv = start(pop3d_env, ["-f", str(pf)])
        assert attempt(srv, user, "vpass") == \
            f"+OK Maildrop has {n} messages ({sum(map(len, w))} octets)"
        quit_ok(srv)
    # The first entry for a name wins.
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "v1", "other") == AUTH_FAIL
    srv.finish(1)
    assert not (pop3d_env.mail / "v1").exists()


def test_passwd_file_account_field(pop3d_env):
    h = cached_hash("vpass", "sha512")
    pf = write_passwd(pop3d_env, [f"vb:{h}:bob:", f"va:{h}:alice:"])
    data = build_mbox(1)[0]
    # vb's session runs as bob: a mailbox of alice's is refused ...
    pop3d_env.write_mbox(data, user="vb", uid=ALICE_UID)
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "vb", "vpass") == BADFILE
    assert srv.read_until_eof() == b""
    srv.wait(1)
    # ... and bob's own opens.
    os.chown(pop3d_env.mailbox("vb"), BOB_UID, MAIL_GID)
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "vb", "vpass").startswith("+OK Maildrop has 1 ")
    quit_ok(srv)
    # va runs as alice: bob's file at va's path is refused.
    pop3d_env.write_mbox(data, user="va", uid=BOB_UID)
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "va", "vpass") == BADFILE
    srv.finish(1)


@pytest.mark.parametrize("account", ["root", "toor", "nosuchaccount", ""])
def test_passwd_file_bad_accounts(pop3d_env, account):
    h = cached_hash("vpass", "sha512")
    pf = write_passwd(pop3d_env, [f"vuser:{h}:{account}:"])
    pop3d_env.write_mbox(build_mbox(1)[0], user="vuser", uid=0, gid=0)
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "vuser", "vpass") == AUTH_FAIL
    assert attempt(srv, "alice", "secret") == AUTH_FAIL   # not in the file
    srv.finish(1)
    assert "login ok" not in srv.log


@pytest.mark.parametrize("name", ["../alice", "a/b", "..", "."])
def test_passwd_file_names_that_would_escape(pop3d_env, name):
    h = cached_hash("vpass", "sha512")
    pf = write_passwd(pop3d_env, [f"{name}:{h}:alice:"])
    pop3d_env.write_mbox(build_mbox(1)[0])
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, name, "vpass") == AUTH_FAIL
    srv.finish(1)
    assert "login ok" not in srv.log


def test_passwd_file_password_with_spaces_and_colon(pop3d_env):
    pw = "correct horse: battery  staple"
    pf = write_passwd(pop3d_env, [f"vuser:{cached_hash(pw, 'yescrypt')}"
                                  f":alice:"])
    srv = start(pop3d_env, ["-f", str(pf)])
    assert attempt(srv, "vuser", pw).startswith("+OK Maildrop has 0 ")
    quit_ok(srv)


def test_passwd_file_missing_is_tempfail(pop3d_env):
    srv = start(pop3d_env, ["-f", str(pop3d_env.tmp / "nonexistent")])
    for _ in range(2):
        assert attempt(srv, "vuser", "vpass") == AUTH_TEMP
    # The third ends the connection, by the rule the monitor keeps too;
    # temporary failures are not held against the client as failed logins.
    assert attempt(srv, "vuser", "vpass") == AUTH_TEMP + "; closing"
    srv.wait()
    log = srv.log
    assert "authentication unavailable, closing connection from" in log
    assert "too many failed logins" not in log
    assert "broke the protocol" not in log
