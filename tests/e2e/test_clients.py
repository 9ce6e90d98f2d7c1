"""Real mail clients against pop3d on 127.0.0.1: fetchmail, mpop, getmail6
and curl.  pop3d is served by systemd socket activation (as in
test_launchers.py) in the wrapper world of conftest.py (real PAM through
pam_wrapper, user alice, password "secret").  Each client delivers into a
directory of the test, never into the real system.  fetchmail and getmail
run as nobody, in a directory of their own under /tmp: getmail refuses to
deliver as root, and fetchmail as root locks /var/run/fetchmail.pid.

Checked for every client: the stored messages are the originals (after
line-ending normalisation; the headers a client adds on top, such as
Received:, are set aside), a second run in keep mode fetches nothing new
(the client's UIDL state works against pop3d's UIDLs), and a run that
deletes leaves the mailbox empty, truncated in place.  mpop must pipeline
(pop3d advertises PIPELINING): pop3d's input is recorded by a small relay
on its stdin, which shows several commands arriving in one read.
"""
import ast
import email
import email.policy
import os
import poplib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from test_launchers import free_port, stop

SSA = shutil.which("systemd-socket-activate")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534
CLIENT_TIMEOUT = 20

# ---- the mailbox -----------------------------------------------------------

ATTACHMENT = "".join(
    f"{i:06d}VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZy4g\n"
    for i in range(1000))

MESSAGES = [
    ("bob@example.net", "Mon Nov  2 09:14:07 2026", """\
Return-Path: <bob@example.net>
Received: from mail.example.net (mail.example.net [192.0.2.25])
\tby mx.example.org (Postfix) with ESMTPS id 4Q1x2y3z4
\tfor <alice@example.org>; Mon,  2 Nov 2026 09:14:05 +0000 (UTC)
Date: Mon, 2 Nov 2026 09:14:03 +0000
From: Bob Example <bob@example.net>
To: Alice <alice@example.org>
Subject: Lunch on Thursday?
Message-ID: <20261102091403.GA1234@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hi Alice,

are you free for lunch on Thursday?
.
The line above is a single dot, and
..this one starts with two.

Bob
"""),
    ("carol@example.de", "Tue Nov  3 17:02:55 2026", """\
Return-Path: <carol@example.de>
Received: from smtp.example.de (smtp.example.de [198.51.100.7])
\tby mx.example.org (Postfix) with ESMTPS id 5R2a3b4c5
\tfor <alice@example.org>; Tue,  3 Nov 2026 17:02:53 +0000 (UTC)
Date: Tue, 3 Nov 2026 18:02:50 +0100
From: =?UTF-8?Q?Carol_M=C3=BCller?= <carol@example.de>
To: alice@example.org
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=
Message-ID: <d3f1a2b4-77c1-4e0a-9b1e-3c2f00a1b2c3@example.de>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Liebe Alice,

schöne Grüße aus Köln — bis bald!

Carol
"""),
    ("dave@example.com", "Wed Nov  4 08:30:00 2026", """\
Return-Path: <dave@example.com>
Received: from out.example.com (out.example.com [203.0.113.9])
\tby mx.example.org (Postfix) with ESMTPS id 6S3d4e5f6
\tfor <alice@example.org>; Wed,  4 Nov 2026 08:29:59 +0000 (UTC)
Date: Wed, 4 Nov 2026 08:29:58 +0000
From: Dave <dave@example.com>
To: alice@example.org
Subject: Report attached
Message-ID: <CAF=report.2026.11.04@mail.example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1_5f2c"

This is a multi-part message in MIME format.

--b1_5f2c
Content-Type: text/plain; charset=us-ascii

The report is attached.

--b1_5f2c
Content-Type: application/octet-stream; name="report.bin"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="report.bin"

""" + ATTACHMENT + """
--b1_5f2c--
"""),
    ("bob@example.net", "Thu Nov  5 10:00:00 2026", """\
Return-Path: <bob@example.net>
Received: from mail.example.net (mail.example.net [192.0.2.25])
\tby mx.example.org (Postfix) with ESMTPS id 7T4g5h6i7
\tfor <alice@example.org>; Thu,  5 Nov 2026 09:59:58 +0000 (UTC)
Date: Thu, 5 Nov 2026 09:59:57 +0000
From: Bob Example <bob@example.net>
To: Alice <alice@example.org>
Subject: Re: Lunch on Thursday?
Message-ID: <20261105095957.GB5678@example.net>
In-Reply-To: <87lunch.fsf@example.org>
References: <20261102091403.GA1234@example.net>
 <87lunch.fsf@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Quoting an old mbox:

>From the archive, as stored in the spool.

See you at noon.
"""),
    ("list-bounces@lists.example.org", "Fri Nov  6 12:00:00 2026", """\
Return-Path: <list-bounces@lists.example.org>
Received: from lists.example.org (lists.example.org [192.0.2.80])
\tby mx.example.org (Postfix) with ESMTP id 8U5j6k7l8
\tfor <alice@example.org>; Fri,  6 Nov 2026 11:59:59 +0000 (UTC)
Date: Fri, 6 Nov 2026 11:59:50 +0000
From: Erin <erin@example.com>
To: users@lists.example.org
Subject: [users] A rather long subject line that a list manager folds
 onto a second line
Message-ID: <list.2026.11.06.1@lists.example.org>
List-Id: Users <users.lists.example.org>
List-Unsubscribe: <mailto:users-leave@lists.example.org>
Precedence: list
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

""" + "A long line: " + "x" * 900 + "\n" + """\
Tabs\tand  spaces   stay.

-- 
users mailing list
"""),
]


def fixture_mailbox():
    """(mbox bytes, {Message-ID: message as stored, LF})."""
    mbox, msgs = b"", {}
    for sender, date, text in MESSAGES:
        msg = text.encode()
        mid = re.search(rb"(?mi)^Message-ID: (<[^>]+>)$", msg).group(1)
        msgs[mid.decode()] = msg
        mbox += f"From {sender} {date}\n".encode() + msg + b"\n"
    return mbox, msgs


HEADER_LINE = re.compile(rb"^(?:[!-9;-~]+:.*|[ \t].*)$")
RETURN_PATH = re.compile(rb"(?mi)^Return-Path:[^\n]*\n")


def without_return_path(msg):
    """The message without its Return-Path lines (the delivering client
    moves the envelope sender's Return-Path to the top), and their values."""
    head, sep, body = msg.partition(b"\n\n")
    head += b"\n"
    paths = [m.split(b":", 1)[1].strip() for m in RETURN_PATH.findall(head)]
    return RETURN_PATH.sub(b"", head)[:-1] + sep + body, paths


def check_stored(stored, originals, added_ok):
    """Compares delivered messages with the originals: each one, after
    CRLF -> LF, must be an original with only header lines added on top
    (whose names are in added_ok).  Returns the Message-IDs seen."""
    seen = []
    for data in stored:
        data = data.replace(b"\r\n", b"\n")
        parsed = email.message_from_bytes(data, policy=email.policy.compat32)
        mid = parsed["Message-ID"]
        assert mid in originals, f"unknown message delivered:\n{data[:500]!r}"
        orig, orig_rp = without_return_path(originals[mid])
        data, rp = without_return_path(data)
        assert rp in ([], orig_rp), (mid, rp, orig_rp)
        assert data.endswith(orig), \
            f"{mid}: delivered message differs from the original:\n" \
            f"{data[:2000]!r}\n---- original ----\n{orig[:2000]!r}"
        added = data[:-len(orig)]
        assert added.endswith(b"\n") or not added, added
        lines = added.split(b"\n")[:-1]
        assert all(HEADER_LINE.match(x) for x in lines), added
        names = {x.split(b":")[0].decode().lower() for x in lines
                 if not x[:1].isspace()}
        assert names <= added_ok, f"{mid}: client added {names}"
        # What a reader sees: subject and body.
        o = email.message_from_bytes(originals[mid],
                                     policy=email.policy.compat32)
        assert parsed["Subject"] == o["Subject"]
        assert parsed.get_payload() == o.get_payload() or \
            parsed.is_multipart()
        seen.append(mid)
    return sorted(seen)


# ---- the server ------------------------------------------------------------

RELAY = r'''
import os, socket, sys, time
"""pop3d's stdin relay: records every read from the client (one Python
bytes literal a line) and passes it on through a pipe.  pop3d writes its
replies straight to the socket on stdout."""
trace, argv = sys.argv[1], sys.argv[2:]
s = socket.socket(fileno=os.dup(0))
peer = s.getpeername()[0]
s.close()
env = dict(os.environ)
env["LD_PRELOAD"] = env.pop("POP3D_LD_PRELOAD")
env["REMOTE_ADDR"] = peer
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.dup2(r, 0)
    os.close(r)
    os.close(w)
    os.execve(argv[0], argv, env)
os.close(r)
with open(trace, "a") as f:
    while True:
        data = os.read(0, 65536)
        f.write(repr(data) + "\n")
        f.flush()
        if not data:
            break
        try:
            os.write(w, data)
        except BrokenPipeError:
            break
        # Give a client time to send what it sends without waiting for a
        # reply: a pipelining client's next commands join the next read.
        time.sleep(0.05)
os.close(w)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
'''


class Served:
    """pop3d on 127.0.0.1:port under systemd-socket-activate, optionally
    behind the stdin relay (trace of pop3d's reads)."""

    def __init__(self, pop3d_env, relay=False):
        assert SSA, "systemd-socket-activate missing: make check installs it"
        self.env = pop3d_env
        self.port = free_port()
        self.log = pop3d_env.tmp / "ssa.log"
        self.trace = pop3d_env.tmp / "stdin-trace.txt" if relay else None
        argv = [SSA, "--inetd", "-a", "-l", f"127.0.0.1:{self.port}"]
        for k, v in pop3d_env.env().items():
            if relay and k == "LD_PRELOAD":
                k = "POP3D_LD_PRELOAD"
            argv += ["-E", f"{k}={v}"]
        if relay:
            script = pop3d_env.tmp / "relay.py"
            script.write_text(RELAY)
            argv += ["/usr/bin/python3", str(script), str(self.trace)]
        argv += pop3d_env.argv()
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=err, env={"PATH": PATH})
        end = time.monotonic() + 10
        while not self.listening():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < end, self.text()
            time.sleep(0.05)

    def listening(self):
        want = f"0100007F:{self.port:04X}"
        with open("/proc/net/tcp") as f:
            return any(x.split()[1] == want and x.split()[3] == "0A"
                       for x in f.readlines()[1:])

    def text(self):
        return self.log.read_text(errors="replace")

    def idle(self, deadline=10.0):
        """Waits until no session runs (each pop3d has exited and released
        its session lock)."""
        end = time.monotonic() + deadline
        while True:
            r = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                               capture_output=True, text=True)
            if not r.stdout.split():
                return
            assert time.monotonic() < end, f"sessions still running:\n" \
                f"{r.stdout}\n{self.text()}"
            time.sleep(0.02)

    def statuses(self):
        return re.findall(r"Child \d+ died with code (\d+)", self.text())

    def stop(self):
        stop(self.proc)

    def uidls(self):
        p = poplib.POP3("127.0.0.1", self.port, timeout=10)
        try:
            p.user("alice")
            p.pass_("secret")
            _, lines, _ = p.uidl()
            p.quit()
        finally:
            p.close()
        self.idle()
        return [x.split()[1].decode() for x in lines]


@pytest.fixture
def served(pop3d_env):
    started = []

    def start(relay=False):
        s = Served(pop3d_env, relay)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def setup_mailbox(pop3d_env):
    mbox, msgs = fixture_mailbox()
    path = pop3d_env.write_mbox(mbox)
    return path, mbox, msgs


def run(argv, env, cwd=None, user=None, expect=(0,)):
    kw = {}
    if user is not None:
        kw = {"user": user, "group": user, "extra_groups": []}
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True,
                       timeout=CLIENT_TIMEOUT, **kw)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode in expect, f"{argv[0]} exited {r.returncode}:\n{out}"
    return r.returncode, out


def files(d):
    return sorted(p for p in Path(d).iterdir() if p.is_file())


def assert_emptied(path, ino):
    st = path.stat()
    assert st.st_size == 0 and st.st_ino == ino, (st.st_size, st.st_ino, ino)


# ---- fetchmail -------------------------------------------------------------

@pytest.fixture
def nobody_home():
    """A directory of nobody's under /tmp, for a client that must not run
    as root (the pytest directory is root-only); removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="pop3d-client-"))
    os.chown(home, NOBODY, NOBODY)
    yield home
    shutil.rmtree(home)


def chown_tree(root):
    for p in [root, *root.rglob("*")]:
        os.chown(p, NOBODY, NOBODY)


def test_fetchmail(pop3d_env, served, nobody_home):
    """fetchmail runs as nobody: as root it would take its lock in
    /var/run/fetchmail.pid (FETCHMAILHOME does not move it), which belongs
    to the machine."""
    assert shutil.which("fetchmail"), "apt-get install fetchmail"
    path, mbox, msgs = setup_mailbox(pop3d_env)
    ino = path.stat().st_ino
    srv = served()
    uidls = srv.uidls()
    home = nobody_home
    mda = home / "store"
    mda.write_text('#!/bin/sh\nexec cat >"$(mktemp "$1/msg.XXXXXX")"\n')
    mda.chmod(0o755)
    env = {"PATH": PATH, "HOME": str(home), "FETCHMAILHOME": str(home),
           "FETCHMAILUSER": "nobody", "LC_ALL": "C"}

    def fetch(name, keep, expect=(0,)):
        out = home / name
        out.mkdir()
        rc = home / "fetchmailrc"
        rc.write_text(
            "set no syslog\n"
            f"poll 127.0.0.1 with proto POP3 and port {srv.port} and uidl:\n"
            '  user "alice" there with password "secret" is "nobody" here\n'
            f"  options {'keep' if keep else 'nokeep fetchall'} norewrite "
            'sslproto ""\n'
            f'  mda "{mda} {out}"\n')
        rc.chmod(0o600)
        chown_tree(home)
        code, log = run(["fetchmail", "-f", str(rc), "-i",
                         str(home / "fetchids"), "--nosyslog", "-v"],
                        env, cwd=home, user=NOBODY, expect=expect)
        srv.idle()
        return log, [p.read_bytes() for p in files(out)]

    log, stored = fetch("keep1", keep=True)
    assert check_stored(stored, msgs, {"received"}) == sorted(msgs), log
    assert path.read_bytes() == mbox
    # fetchmail remembers the UIDLs pop3d gave...
    ids = (home / "fetchids").read_text().split()
    assert sorted(ids[1::2]) == sorted(uidls), ids
    # ...and a second run in keep mode fetches nothing (exit 1: no mail).
    log, stored = fetch("keep2", keep=True, expect=(1,))
    assert stored == [], log
    assert f"{len(msgs)} messages ({len(msgs)} seen)" in log, log
    assert path.read_bytes() == mbox
    # Without keep (fetchall: the seen ones too), everything is deleted.
    log, stored = fetch("nokeep", keep=False)
    assert check_stored(stored, msgs, {"received"}) == sorted(msgs), log
    assert_emptied(path, ino)
    assert srv.statuses() == ["0"] * 4, srv.text()


# ---- mpop ------------------------------------------------------------------

def pipelined_reads(trace):
    """The reads of pop3d's stdin that held more than one command line."""
    reads = [ast.literal_eval(x) for x in trace.read_text().splitlines()]
    return [r for r in reads if r.count(b"\r\n") > 1]


def test_mpop_pipelines(pop3d_env, served):
    assert shutil.which("mpop"), "apt-get install mpop"
    path, mbox, msgs = setup_mailbox(pop3d_env)
    ino = path.stat().st_ino
    srv = served(relay=True)
    uidls = srv.uidls()
    home = pop3d_env.tmp / "mpop"
    home.mkdir()
    env = {"PATH": PATH, "HOME": str(home), "LC_ALL": "C"}

    def fetch(name, keep, only_new=True):
        md = home / name
        for sub in ("cur", "new", "tmp"):
            (md / sub).mkdir(parents=True)
        cfg = home / "mpoprc"
        cfg.write_text(
            "defaults\n"
            "account test\n"
            "host 127.0.0.1\n"
            f"port {srv.port}\n"
            "tls off\n"
            "auth user\n"
            "user alice\n"
            "password secret\n"
            f"keep {'on' if keep else 'off'}\n"
            f"only_new {'on' if only_new else 'off'}\n"
            f"uidls_file {home}/uidls\n"
            f"delivery maildir {md}\n")
        cfg.chmod(0o600)
        code, log = run(["mpop", "-C", str(cfg), "--debug", "test"],
                        env, cwd=home)
        srv.idle()
        stored = [p.read_bytes() for p in files(md / "new")]
        return log.replace("\r\n", "\n"), stored

    log, stored = fetch("keep1", keep=True)
    assert check_stored(stored, msgs, {"received"}) == sorted(msgs), log
    assert path.read_bytes() == mbox
    # mpop, from its side: RETR 2 is sent before the reply to RETR 1.
    assert re.search(r"--> RETR 1\n--> RETR 2\n", log), log
    # pop3d, from its side: commands arrived together in one read.
    assert any(r.count(b"RETR ") > 1 for r in pipelined_reads(srv.trace)), \
        srv.trace.read_text()
    uidl_file = (home / "uidls").read_text()
    assert all(u in uidl_file for u in uidls), uidl_file

    log, stored = fetch("keep2", keep=True)
    assert stored == [], log
    assert "RETR" not in log, log
    assert path.read_bytes() == mbox

    log, stored = fetch("nokeep", keep=False, only_new=False)
    assert check_stored(stored, msgs, {"received"}) == sorted(msgs), log
    assert re.search(r"--> DELE 1\n--> DELE 2\n", log), log
    assert any(r.count(b"DELE ") > 1 for r in pipelined_reads(srv.trace)), \
        srv.trace.read_text()
    assert_emptied(path, ino)
    assert srv.statuses() == ["0"] * 4, srv.text()


# ---- getmail6 --------------------------------------------------------------

def test_getmail(pop3d_env, served, nobody_home):
    """getmail refuses to deliver as root: it runs as nobody."""
    assert shutil.which("getmail"), "apt-get install getmail6"
    path, mbox, msgs = setup_mailbox(pop3d_env)
    ino = path.stat().st_ino
    srv = served()
    uidls = srv.uidls()
    home = nobody_home
    env = {"PATH": PATH, "HOME": str(home), "LC_ALL": "C.UTF-8"}

    def fetch(name, delete, read_all):
        md = home / name
        for sub in ("cur", "new", "tmp"):
            (md / sub).mkdir(parents=True)
        rc = home / "getmailrc"
        rc.write_text(
            "[retriever]\n"
            "type = SimplePOP3Retriever\n"
            "server = 127.0.0.1\n"
            f"port = {srv.port}\n"
            "username = alice\n"
            "password = secret\n"
            "[destination]\n"
            "type = Maildir\n"
            f"path = {md}/\n"
            "[options]\n"
            "verbose = 2\n"
            f"delete = {str(delete).lower()}\n"
            f"read_all = {str(read_all).lower()}\n"
            "message_log_syslog = false\n")
        chown_tree(home)
        code, log = run(["getmail", "--getmaildir", str(home),
                         "--rcfile", str(rc)], env, cwd=home, user=NOBODY)
        srv.idle()
        return log, [p.read_bytes() for p in files(md / "new")]

    added = {"delivered-to", "received"}
    log, stored = fetch("keep1", delete=False, read_all=False)
    assert check_stored(stored, msgs, added) == sorted(msgs), log
    assert path.read_bytes() == mbox
    oldmail = "".join(p.read_text() for p in home.glob("oldmail-*"))
    assert all(u in oldmail for u in uidls), oldmail

    log, stored = fetch("keep2", delete=False, read_all=False)
    assert stored == [], log
    assert f"0 messages (0 bytes) retrieved, {len(msgs)} skipped" in log, log
    assert path.read_bytes() == mbox

    log, stored = fetch("delete", delete=True, read_all=True)
    assert check_stored(stored, msgs, added) == sorted(msgs), log
    assert_emptied(path, ino)
    assert srv.statuses() == ["0"] * 4, srv.text()


# ---- curl ------------------------------------------------------------------

def test_curl(pop3d_env, served):
    path, mbox, msgs = setup_mailbox(pop3d_env)
    srv = served()
    url = f"pop3://127.0.0.1:{srv.port}/"
    env = {"PATH": PATH}

    def curl(*args):
        code, out = run(["curl", "-sS", "--max-time", "10",
                         "-u", "alice:secret", *args], env)
        srv.idle()
        return code

    def curl_out(*args):
        r = subprocess.run(["curl", "-sS", "--max-time", "10",
                            "-u", "alice:secret", *args], env=env,
                           capture_output=True, timeout=CLIENT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        srv.idle()
        return r.stdout

    originals = list(msgs.values())
    wires = [m.replace(b"\n", b"\r\n") for m in originals]
    listing = curl_out(url)
    assert listing == b"".join(b"%d %d\r\n" % (i, len(w))
                               for i, w in enumerate(wires, 1))
    uidl = curl_out("-X", "UIDL", url)
    assert [x.split()[1].decode() for x in uidl.splitlines()] == \
        srv.uidls()
    stored = [curl_out(f"{url}{i}") for i in range(1, len(msgs) + 1)]
    assert [s.replace(b"\r\n", b"\n") for s in stored] == originals
    assert check_stored(stored, msgs, set()) == sorted(msgs)
    assert path.read_bytes() == mbox
    assert curl(url + "1", "-X", "DELE", "-I") == 0
    assert path.read_bytes() == mbox[mbox.index(b"\nFrom ") + 1:]
    assert srv.statuses() == ["0"] * (len(msgs) + 4), srv.text()
