"""
"Hand mode": pop3d started by an ordinary user, without any wrapper, over
a pipe pair (as under stunnel's exec= or on a terminal): it can serve that
user's own mailbox only.  Runs as the real user nobody via setpriv, with a
-f password file whose account field must be that user.
"""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import (NOBODY, POP3D, Server, build_mbox,
                      hash_password)

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
AUTH_FAIL = "-ERR [AUTH] Authentication failed"


class Hand:
    def __init__(self, d):
        self.dir = Path(d)
        os.chmod(self.dir, 0o755)
        self.mail = self.dir / "mail"
        self.mail.mkdir()
        os.chown(self.mail, NOBODY, NOBODY)
        os.chmod(self.mail, 0o755)
        self.run = self.dir / "run"
        self.run.mkdir()
        os.chown(self.run, NOBODY, NOBODY)
        os.chmod(self.run, 0o700)
        h = hash_password("nobodypw", "sha512")
        self.passwd = self.dir / "passwd"
        self.passwd.write_text(
            f"nob:{h}:nobody:\n"
            f"evil:{h}:daemon:\n"
            f"rooty:{h}:root:\n"
            f"ghost:{h}:nosuchaccount:\n")
        os.chmod(self.passwd, 0o644)
        self.servers = []
        self.n = 0

    def mailbox(self, name="nob"):
        return self.mail / name

    def write_mbox(self, data, name="nob", mode=0o600):
        p = self.mailbox(name)
        p.write_bytes(data)
        os.chown(p, NOBODY, NOBODY)
        os.chmod(p, mode)
        return p

    def start(self, extra=()):
        self.n += 1
        argv = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}",
                "--clear-groups", POP3D, "-d", "-f", str(self.passwd),
                "-m", f"{self.mail}/%u", "-R", str(self.run),
                "-t", "30"] + list(extra)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
               "ASAN_OPTIONS": "verify_asan_link_order=0:detect_leaks=1",
               "UBSAN_OPTIONS": "print_stacktrace=1"}
        srv = Server(argv, env, self.dir / f"stderr-{self.n}.log",
                     use_pipes=True)
        self.servers.append(srv)
        return srv


@pytest.fixture
def hand():
    d = tempfile.mkdtemp(prefix="pop3d-e2e-hand-", dir="/tmp")
    h = Hand(d)
    yield h
    for srv in h.servers:
        srv.close()
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    logs = [srv.log for srv in h.servers]
    shutil.rmtree(d, ignore_errors=True)
    for log in logs:
        assert "ERROR: AddressSanitizer" not in log, log
        assert "runtime error:" not in log, log


def test_hand_mode_bare_lf_session(hand):
    data, chunks, wires = build_mbox(2)
    path = hand.write_mbox(data)
    ino = os.stat(path).st_ino
    srv = hand.start()
    srv.send(b"CAPA\nUSER nob\nPASS nobodypw\nSTAT\nLIST\nRETR 1\nDELE 1\n"
             b"QUIT\n")
    assert srv.reply() == "+OK pop3d ready"
    assert srv.reply() == "+OK Capability list follows"
    srv.read_body()
    assert srv.reply() == "+OK Send your password"
    t = sum(map(len, wires))
    assert srv.reply() == f"+OK Maildrop has 2 messages ({t} octets)"
    assert srv.reply() == f"+OK 2 {t}"
    assert srv.reply() == f"+OK 2 messages ({t} octets)"
    assert srv.read_body() == \
        f"1 {len(wires[0])}\r\n2 {len(wires[1])}\r\n.\r\n".encode()
    assert srv.reply() == f"+OK {len(wires[0])} octets"
    assert srv.read_body() == wires[0] + b".\r\n"
    assert srv.reply() == "+OK Message 1 deleted"
    assert srv.reply() == "+OK pop3d signing off (1 messages left)"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    assert path.read_bytes() == chunks[1]
    st = os.stat(path)
    assert (st.st_ino, st.st_uid, st.st_gid) == (ino, NOBODY, NOBODY)
    assert sorted(os.listdir(hand.mail)) == ["nob"]
    log = srv.log
    assert "pop3d: connection from local" in log
    assert "pop3d: login ok: nob from local" in log
    assert f"pop3d: nob: 2 messages ({t} octets) loaded" in log
    assert (f"pop3d: nob: 1 ({len(wires[0])}) deleted, "
            f"1 ({len(wires[1])}) left") in log
    assert "nobodypw" not in log


@pytest.mark.parametrize("user", ["evil", "rooty"])
def test_hand_mode_other_account_refused(hand, user):
    hand.write_mbox(build_mbox(1)[0], name=user)
    srv = hand.start()
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd(f"USER {user}") == "+OK Send your password"
    assert srv.cmd("PASS nobodypw") == AUTH_FAIL
    assert srv.cmd("USER nob") == "+OK Send your password"
    assert srv.cmd("PASS wrong") == AUTH_FAIL
    assert srv.cmd("QUIT") == "+OK pop3d signing off"
    srv.wait(0)
    assert f"{user}: not running as root, so only uid {NOBODY} can be " \
        "served" in srv.log
    assert "login ok" not in srv.log


def test_hand_mode_missing_account_is_auth_failure(hand):
    srv = hand.start()
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd("USER ghost") == "+OK Send your password"
    assert srv.cmd("PASS nobodypw") == AUTH_FAIL
    assert srv.cmd("QUIT") == "+OK pop3d signing off"
    srv.wait(0)


def test_hand_mode_read_only_mailbox(hand):
    """A mailbox the user may read but not write is served; deletions
    cannot be committed and say so, and the file is left alone."""
    data, chunks, wires = build_mbox(2)
    path = hand.write_mbox(data, mode=0o400)
    srv = hand.start()
    srv.send(b"USER nob\r\nPASS nobodypw\r\n")
    assert srv.reply() == "+OK pop3d ready"
    assert srv.reply() == "+OK Send your password"
    assert srv.reply().startswith("+OK Maildrop has 2 messages"), srv.log
    assert srv.cmd("RETR 2") == f"+OK {len(wires[1])} octets"
    assert srv.read_body() == wires[1] + b".\r\n"
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    assert srv.cmd("QUIT") == "-ERR [SYS/PERM] Mailbox is read-only"
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert path.read_bytes() == data
