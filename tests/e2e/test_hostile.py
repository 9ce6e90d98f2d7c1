"""
Hostile and odd mailboxes, end to end: a 64 MiB line, 100,000 tiny
messages, a sparse mailbox beyond 4 GiB, things at the mailbox path that
are not a mailbox, and other programs rewriting or truncating the file
under a session.  Each case must give the right messages and sizes, or a
clear -ERR with the file untouched (bytes, mtime, inode).  Big files are
made here, at test time, in the pytest tmp dir; bodies are read from the
wire as a stream, never held whole.
"""
import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

from conftest import (ALICE_UID, IO_TIMEOUT, MAIL_GID, POP3D, Pop3dEnv,
                      Server, ServerError, build_mbox, make_message)

BADFILE = "-ERR [SYS/PERM] Mailbox is not a regular file of yours"
NOACCESS = "-ERR [SYS/PERM] Mailbox cannot be read (permission denied)"
NOTMBOX = "-ERR [SYS/PERM] Mailbox is not in mbox format"
CHANGED = "-ERR [SYS/TEMP] Mailbox was changed by another program"
FROM = b"From a@b Mon Jan  1 12:00:00 2024"
CHUNK = 128 * 1024          # pop3d's read size (mbox.c)
MiB = 1 << 20
GiB = 1 << 30


# ---- helpers -------------------------------------------------------------------

def snapshot(path):
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "size": st.st_size, "ino": st.st_ino,
            "dev": st.st_dev, "uid": st.st_uid, "gid": st.st_gid,
            "mode": st.st_mode, "mtime_ns": st.st_mtime_ns,
            "nlink": st.st_nlink}


def age(path):
    """An old mtime, so that any write would show."""
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000),
             follow_symlinks=False)


def maildrop_line(n, octets):
    return f"+OK Maildrop has {n} messages ({octets} octets)"


def is_asan_build():
    out = subprocess.run(["nm", "-D", POP3D], capture_output=True, text=True)
    return "__asan_init" in out.stdout


ASAN = is_asan_build()


def vm_hwm_kib(pid):
    """The peak resident set of a live process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def assert_rss_below(kib, limit_mib, what):
    if ASAN:
        return      # ASan's shadow memory and quarantine are not pop3d's
    assert kib < limit_mib * 1024, \
        f"{what}: pop3d's peak RSS is {kib} KiB, limit {limit_mib} MiB"


def recv_more(srv, timeout=IO_TIMEOUT):
    """Next bytes from the server (srv.buf first), b'' at EOF."""
    if srv.buf:
        data, srv.buf = srv.buf, b""
        return data
    try:
        return srv._recv(timeout)
    except socket.timeout:
        raise ServerError(f"timed out reading a body\nlog:\n{srv.log}")


class BodyStream:
    """Reads a dot-stuffed multi-line body from the wire piece by piece,
    unstuffs it, and keeps only its length, its MD5 and its last bytes.
    terminated: the final '.\\r\\n' was seen (else the server hung up)."""

    def __init__(self):
        self.octets = 0
        self.md5 = hashlib.md5()
        self.tail = b""
        self.terminated = False
        self.bare_lf = False
        self.stray_dot = False

    def _emit(self, b):
        if not b:
            return
        self.octets += len(b)
        self.md5.update(b)
        self.tail = (self.tail + b)[-64:]

    def read(self, srv, timeout=IO_TIMEOUT):
        at_bol = True
        prev = b"\n"            # the byte before the current one
        carry = b""
        while True:
            data = recv_more(srv, timeout)
            if not data:
                return self     # EOF before the terminator
            data = carry + data
            carry = b""
            i, n = 0, len(data)
            while i < n:
                if at_bol:
                    if data[i:i + 1] == b".":
                        if n - i < 3 and data[i + 1:i + 2] in (b"", b"\r"):
                            carry = data[i:]
                            break
                        if data[i + 1:i + 3] == b"\r\n":
                            self.terminated = True
                            srv.buf = data[i + 3:]
                            return self
                        if data[i + 1:i + 2] == b".":
                            i += 1      # undo the stuffing
                        else:
                            self.stray_dot = True
                    at_bol = False
                j = data.find(b"\n", i)
                end = n if j < 0 else j + 1
                piece = data[i:end]
                if j >= 0:
                    before = data[j - 1:j] if j > i else prev
                    if before != b"\r":
                        self.bare_lf = True
                    at_bol = True
                self._emit(piece)
                if piece:
                    prev = piece[-1:]
                i = end

    def check_exact(self, announced, md5=None):
        assert self.terminated, "the body was not terminated"
        assert not self.bare_lf, "a bare LF on the wire"
        assert not self.stray_dot, "an unstuffed line starting with '.'"
        assert self.octets == announced, \
            f"announced {announced} octets, sent {self.octets}"
        if md5 is not None:
            assert self.md5.hexdigest() == md5, "message bytes differ"


def retr_stream(srv, n):
    """RETR n, read as a stream: (announced size, BodyStream)."""
    st = srv.cmd(f"RETR {n}")
    m = re.fullmatch(r"\+OK (\d+) octets", st)
    assert m, f"RETR {n} answered {st!r}"
    return int(m.group(1)), BodyStream().read(srv)


def read_multi_fast(srv, timeout=IO_TIMEOUT):
    """A big multi-line body (still stuffed) without quadratic copying."""
    buf = bytearray(srv.buf)
    srv.buf = b""
    searched = 0
    while True:
        if buf.startswith(b".\r\n"):
            srv.buf = bytes(buf[3:])
            return b""
        i = buf.find(b"\r\n.\r\n", max(0, searched - 4))
        if i >= 0:
            srv.buf = bytes(buf[i + 5:])
            return bytes(buf[:i + 2])
        searched = len(buf)
        data = srv._recv(timeout)
        if not data:
            raise ServerError("EOF inside a multi-line reply")
        buf += data


def list_fast(srv):
    st = srv.cmd("LIST")
    assert st.startswith("+OK "), st
    body = read_multi_fast(srv)
    out = []
    for k, line in enumerate(body.split(b"\r\n")[:-1], 1):
        n, size = line.split(b" ")
        assert int(n) == k
        out.append(int(size))
    return out


def uidl_fast(srv):
    assert srv.cmd("UIDL") == "+OK Unique-ID listing follows"
    body = read_multi_fast(srv)
    out = []
    for k, line in enumerate(body.split(b"\r\n")[:-1], 1):
        n, uid = line.split(b" ")
        assert int(n) == k
        assert re.fullmatch(rb"[\x21-\x7e]{1,70}", uid), uid
        out.append(uid)
    return out


def quit_ok(srv, left):
    assert srv.cmd("QUIT") == f"+OK pop3d signing off ({left} messages left)"
    assert srv.read_until_eof() == b""


def refused(pop3d_env, expected, srv=None, no_hang=False):
    """A login whose PASS is answered with expected, then a hang-up.

    no_hang: the refusal is pop3d's own decision, not the end of a wait.
    A pop3d blocked on the file (a FIFO's open) never answers, which the
    harness's IO_TIMEOUT catches; one that waited until a timer gave up
    says "timeout" in its log."""
    srv = srv or pop3d_env.start()
    r = srv.login()
    assert r == expected, f"PASS answered {r!r}\nlog:\n{srv.log}"
    assert srv.read_until_eof() == b""
    srv.wait(1)
    if no_hang:
        assert "timeout" not in srv.log, \
            f"the refusal came from a timer:\n{srv.log}"
    assert pop3d_env.leftovers() == []
    return srv


@pytest.fixture
def user_env():
    """A world where pop3d runs for real as alice (uid 1000), as a
    single-process pop3d: the kernel, not uid_wrapper, checks every
    access, so a mode-0 file is unreadable.  (Under uid_wrapper the
    process is root to the kernel; without CAP_DAC_OVERRIDE it could not
    enter alice's 0700 state directory either.)  The spool is what Debian
    ships, root:mail 2775, which alice cannot write: her dotlocks go
    through liblockfile's setgid helper.  It lives under /tmp, since the
    pytest tmp dir's parents are closed to other users."""
    d = tempfile.mkdtemp(prefix="pop3d-e2e-user-", dir="/tmp")
    e = Pop3dEnv(d)
    os.chown(e.mail, 0, MAIL_GID)
    os.chmod(e.mail, 0o2775)
    sd = e.state_dir()
    sd.mkdir(mode=0o700)
    os.chown(sd, ALICE_UID, ALICE_UID)
    yield e
    errors = e.cleanup()
    shutil.rmtree(d, ignore_errors=True)
    if errors:
        pytest.fail("\n".join(errors))


def start_as_user(env):
    """pop3d started as alice for real (setpriv), PAM and NSS wrapped."""
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    env._nlogs += 1
    log = env.tmp / f"pop3d-{env._nlogs}.log"
    argv = [setpriv, f"--reuid={ALICE_UID}", f"--regid={ALICE_UID}",
            "--clear-groups"] + env.argv()
    e = env.env()
    e["LD_PRELOAD"] = " ".join(x for x in e["LD_PRELOAD"].split()
                               if "uid_wrapper" not in x)
    for k in ("UID_WRAPPER", "UID_WRAPPER_ROOT"):
        e.pop(k, None)
    srv = Server(argv, e, log)
    env.servers.append(srv)
    return srv


# ---- a 64 MiB line ---------------------------------------------------------------

LONG = 64 * MiB


def long_line_pieces(hdr_len):
    """The 64 MiB line (no LF) in 1 MiB pieces: it starts like a dated
    From_ line (but is far longer than 4096 bytes, so never a separator),
    and holds lone CRs, among them one on the last byte of several of pop3d's
    128 KiB send chunks (the line starts hdr_len bytes into the message)."""
    crs = {k * CHUNK - 1 - hdr_len for k in range(1, LONG // CHUNK)}
    crs |= set(range(5000, LONG, 999_983))
    pattern = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 29128)[:MiB]
    for p in range(0, LONG, MiB):
        piece = bytearray(pattern)
        if p == 0:
            piece[:len(FROM) + 1] = FROM + b" "
        for c in crs:
            if p <= c < p + MiB:
                piece[c - p] = 0x0D
        yield bytes(piece)


def test_64mib_single_line(pop3d_env):
    head = b"Subject: one long line\nMessage-ID: <long@example.org>\n\n"
    wire_head = head.replace(b"\n", b"\r\n")
    small_chunk, small_wire = make_message(2)
    path = pop3d_env.mailbox()
    md5 = hashlib.md5(wire_head)
    with open(path, "wb") as f:
        f.write(FROM + b"\n" + head)
        for piece in long_line_pieces(len(wire_head)):
            f.write(piece)
            md5.update(piece)
        f.write(b"\n\n" + small_chunk)
    md5.update(b"\r\n")
    os.chown(path, ALICE_UID, MAIL_GID)
    os.chmod(path, 0o600)
    size1 = len(wire_head) + LONG + 2
    size2 = len(small_wire)

    srv = pop3d_env.login()
    assert srv.cmd("STAT") == f"+OK 2 {size1 + size2}"
    assert list_fast(srv) == [size1, size2]
    announced, body = retr_stream(srv, 1)
    assert announced == size1
    body.check_exact(size1, md5.hexdigest())
    assert body.tail.endswith(b"\r\n")
    hwm = vm_hwm_kib(srv.proc.pid)
    print(f"pop3d VmHWM after RETR: {hwm} KiB")
    assert_rss_below(hwm, 32, "after RETR of a 64 MiB line")
    announced, body = retr_stream(srv, 2)
    body.check_exact(size2, hashlib.md5(small_wire).hexdigest())
    st, raw = srv.multi("TOP 1 0")
    assert st == "+OK Top of message follows"
    assert raw == wire_head
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    ino = os.stat(path).st_ino
    quit_ok(srv, 1)
    srv.wait(0)
    assert path.read_bytes() == small_chunk
    assert os.stat(path).st_ino == ino
    assert pop3d_env.leftovers() == []


# ---- 100,000 tiny messages ---------------------------------------------------------

N_TINY = 100_000


def tiny(i):
    """(mbox chunk, size on the wire) of tiny message i."""
    msg = b"Message-ID: <%d@x>\n\nm%d\n" % (i, i)
    return (b"From t%d@x Mon Jan  1 12:00:00 2024\n" % i + msg + b"\n",
            len(msg) + msg.count(b"\n"))


def test_100k_tiny_messages(pop3d_env):
    chunks, sizes = map(list, zip(*(tiny(i) for i in range(1, N_TINY + 1))))
    path = pop3d_env.write_mbox(b"".join(chunks))
    ino = os.stat(path).st_ino
    srv = pop3d_env.login()
    total = sum(sizes)
    assert srv.cmd("STAT") == f"+OK {N_TINY} {total}"
    got = list_fast(srv)
    assert len(got) == N_TINY
    assert got == sizes
    assert sum(got) == total
    uids = uidl_fast(srv)
    assert len(uids) == N_TINY
    assert len(set(uids)) == N_TINY, "UIDLs are not unique"
    assert srv.cmd("LIST 100000") == f"+OK 100000 {sizes[-1]}"
    assert srv.cmd("LIST 100001") == "-ERR No such message"
    st, raw = srv.multi("RETR 65536")
    assert raw == b"Message-ID: <65536@x>\r\n\r\nm65536\r\n"
    deleted = [1, 2, 31_337, 65_536, 99_999, 100_000]
    for d in deleted:
        assert srv.cmd(f"DELE {d}") == f"+OK Message {d} deleted"
    left = N_TINY - len(deleted)
    assert srv.cmd("STAT") == \
        f"+OK {left} {total - sum(sizes[d - 1] for d in deleted)}"
    hwm = vm_hwm_kib(srv.proc.pid)
    print(f"pop3d VmHWM with 100,000 messages: {hwm} KiB")
    assert_rss_below(hwm, 64, "after LIST and UIDL of 100,000 messages")
    quit_ok(srv, left)
    srv.wait(0)
    keep = set(range(1, N_TINY + 1)) - set(deleted)
    assert path.read_bytes() == b"".join(chunks[i - 1] for i in sorted(keep))
    assert os.stat(path).st_ino == ino
    assert pop3d_env.leftovers() == []
    # The next session sees the survivors with the same UIDLs.
    srv = pop3d_env.login()
    assert srv.cmd("STAT").startswith(f"+OK {left} ")
    assert uidl_fast(srv) == [uids[i - 1] for i in sorted(keep)]
    quit_ok(srv, left)
    srv.wait(0)


# ---- a sparse mailbox beyond 4 GiB -------------------------------------------------

def test_sparse_mailbox_beyond_4gib(pop3d_env):
    """Message 1 holds a hole just over 4 GiB (NUL bytes are content: one
    long line); message 2 starts beyond 4 GiB.  Reading the hole once
    (the parse) is the slow part: the kernel fills 4 GiB of page cache."""
    hole = 4 * GiB + MiB
    head = b"Subject: sparse\nMessage-ID: <sparse@x>\n\nstart\n"
    after_hole = b"\nend\n\n"
    from2 = b"From far@away Tue Jan  2 08:00:00 2024"
    msg2 = b"Subject: beyond 4 GiB\n\nlast\n.dot\n"
    path = pop3d_env.mailbox()
    with open(path, "wb") as f:
        f.write(FROM + b"\n" + head)
        f.seek(hole, os.SEEK_CUR)
        f.write(after_hole + from2 + b"\n" + msg2)
    try:
        sparse_session(pop3d_env, path, hole, head, after_hole, from2, msg2)
    finally:
        path.unlink(missing_ok=True)


def sparse_session(pop3d_env, path, hole, head, after_hole, from2, msg2):
    os.chown(path, ALICE_UID, MAIL_GID)
    os.chmod(path, 0o600)
    st = os.stat(path)
    if st.st_blocks * 512 > 16 * MiB:
        pytest.skip(f"{pop3d_env.tmp} does not keep holes (st_blocks "
                    f"{st.st_blocks} for {st.st_size} bytes)")
    off2 = len(FROM) + 1 + len(head) + hole + len(after_hole)
    assert off2 > 1 << 32
    assert st.st_size == off2 + len(from2) + 1 + len(msg2)
    size1 = len(head.replace(b"\n", b"\r\n")) + hole + 2 + len(b"end\r\n")
    wire2 = msg2.replace(b"\n", b"\r\n")
    assert size1 > 1 << 32

    srv = pop3d_env.start(timeout=300)
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS secret", timeout=120) == \
        maildrop_line(2, size1 + len(wire2))
    assert srv.cmd("STAT") == f"+OK 2 {size1 + len(wire2)}"
    assert list_fast(srv) == [size1, len(wire2)]
    assert srv.cmd("LIST 1") == f"+OK 1 {size1}"
    announced, body = retr_stream(srv, 2)
    assert announced == len(wire2)
    body.check_exact(len(wire2), hashlib.md5(wire2).hexdigest())
    st_, raw = srv.multi("TOP 1 0")
    assert st_ == "+OK Top of message follows"
    assert raw == b"Subject: sparse\r\nMessage-ID: <sparse@x>\r\n\r\n"
    st_, raw = srv.multi("TOP 1 1")
    assert raw == b"Subject: sparse\r\nMessage-ID: <sparse@x>\r\n\r\n" \
        b"start\r\n"
    st_, raw = srv.multi("TOP 2 1")
    assert raw == b"Subject: beyond 4 GiB\r\n\r\nlast\r\n"
    uid = srv.cmd("UIDL 2")
    assert re.fullmatch(r"\+OK 2 [\x21-\x7e]{1,70}", uid), uid
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    quit_ok(srv, 1)
    srv.wait(0)
    after = os.stat(path)
    assert after.st_ino == st.st_ino
    assert after.st_size == off2
    assert after.st_blocks * 512 <= 16 * MiB, "the hole was filled in"
    with open(path, "rb") as f:
        assert f.read(len(FROM) + 1 + len(head)) == FROM + b"\n" + head
        f.seek(off2 - len(after_hole) - 4096)
        assert f.read() == b"\0" * 4096 + after_hole
    assert pop3d_env.leftovers() == []
    size = len(wire2)
    assert f"pop3d: alice: 1 ({size}) deleted, 1 ({size1}) left" in srv.log


# ---- things at the mailbox path ----------------------------------------------------

def test_empty_file_untouched(pop3d_env):
    path = pop3d_env.write_mbox(b"")
    age(path)
    before = snapshot(path)
    srv = pop3d_env.start()
    assert srv.login() == maildrop_line(0, 0)
    assert srv.cmd("STAT") == "+OK 0 0"
    assert srv.cmd("LIST") == "+OK 0 messages (0 octets)"
    assert srv.readline() == b".\r\n"
    assert srv.cmd("DELE 1") == "-ERR No such message"
    quit_ok(srv, 0)
    srv.wait(0)
    assert snapshot(path) == before
    assert pop3d_env.leftovers() == []


def test_missing_file_not_created(pop3d_env):
    before = sorted(os.listdir(pop3d_env.mail))
    srv = pop3d_env.start()
    assert srv.login() == maildrop_line(0, 0)
    assert srv.cmd("UIDL") == "+OK Unique-ID listing follows"
    assert srv.readline() == b".\r\n"
    assert srv.cmd("TOP 1 0") == "-ERR No such message"
    quit_ok(srv, 0)
    srv.wait(0)
    assert not os.path.lexists(pop3d_env.mailbox())
    assert sorted(os.listdir(pop3d_env.mail)) == before == []


def test_fifo_does_not_hang(pop3d_env):
    p = pop3d_env.mailbox()
    os.mkfifo(p, 0o600)
    os.chown(p, ALICE_UID, MAIL_GID)
    srv = refused(pop3d_env, BADFILE, no_hang=True)
    assert stat.S_ISFIFO(os.lstat(p).st_mode)
    assert "not a regular file" in srv.log


@pytest.mark.parametrize("mode", [0o404, 0o202, 0o000],
                         ids=["read-only", "write-only", "mode-0"])
def test_fifo_without_write_permission_does_not_hang(user_env, mode):
    """O_RDWR is refused, so pop3d falls back to a read-only open: on a
    FIFO that must not wait for a writer."""
    pop3d_env = user_env
    p = pop3d_env.mailbox()
    os.mkfifo(p)
    os.chown(p, ALICE_UID, MAIL_GID)
    os.chmod(p, mode)
    # Unreadable: "permission denied"; readable: "not a regular file".
    srv = refused(pop3d_env, BADFILE if mode & 0o004 else NOACCESS,
                  srv=start_as_user(pop3d_env), no_hang=True)
    assert stat.S_ISFIFO(os.lstat(p).st_mode)
    assert stat.S_IMODE(os.lstat(p).st_mode) == mode
    assert srv.log


def test_directory_at_mailbox_path(pop3d_env):
    d = pop3d_env.mailbox()
    d.mkdir(mode=0o700)
    os.chown(d, ALICE_UID, MAIL_GID)
    (d / "cur").mkdir()
    age(d)
    before = os.stat(d)
    srv = refused(pop3d_env, BADFILE, no_hang=True)
    after = os.stat(d)
    assert (after.st_ino, after.st_mtime_ns) == \
        (before.st_ino, before.st_mtime_ns)
    assert sorted(os.listdir(d)) == ["cur"]
    assert "not a regular file" in srv.log


def test_socket_at_mailbox_path(pop3d_env):
    p = pop3d_env.mailbox()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(p))
        s.listen(1)
        os.chown(p, ALICE_UID, MAIL_GID)
        refused(pop3d_env, BADFILE, no_hang=True)
        assert stat.S_ISSOCK(os.lstat(p).st_mode)
    finally:
        s.close()


def test_char_device_at_mailbox_path(pop3d_env):
    p = pop3d_env.mailbox()
    try:
        os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("mknod is not permitted here")
    os.chown(p, ALICE_UID, MAIL_GID)
    refused(pop3d_env, BADFILE, no_hang=True)
    assert stat.S_ISCHR(os.lstat(p).st_mode)


def test_hard_linked_mailbox(pop3d_env):
    data = build_mbox(3)[0]
    path = pop3d_env.write_mbox(data)
    other = pop3d_env.tmp / "backup-link"
    os.link(path, other)
    age(path)
    before = snapshot(path)
    assert before["nlink"] == 2
    srv = refused(pop3d_env, BADFILE)
    assert snapshot(path) == before
    assert snapshot(other) == before
    assert "with one link" in srv.log


def test_mode_0_mailbox(user_env):
    pop3d_env = user_env
    data = build_mbox(2)[0]
    path = pop3d_env.write_mbox(data, mode=0o000)
    age(path)
    before = snapshot(path)
    srv = start_as_user(pop3d_env)
    r = srv.login()
    assert r.startswith("-ERR [SYS/PERM] "), \
        f"PASS answered {r!r}\nlog:\n{srv.log}"
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert "Permission denied" in srv.log, srv.log
    assert snapshot(path) == before
    assert pop3d_env.leftovers() == []


def test_control_without_dac_override(user_env):
    """The harness variant used above serves a mailbox its owner's mode
    bits let it read and write, in a spool it cannot write: the dotlock
    is made by liblockfile's setgid helper and removed again."""
    pop3d_env = user_env
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data, mode=0o606)
    srv = start_as_user(pop3d_env)
    assert srv.login() == maildrop_line(2, sum(map(len, wires)))
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    quit_ok(srv, 1)
    srv.wait(0)
    assert path.read_bytes() == chunks[1]
    assert pop3d_env.leftovers() == []


def test_missing_mailbox_in_unwritable_spool(user_env):
    """No mailbox yet, in a spool the user cannot write (liblockfile's
    helper would refuse to lock a file that does not exist): an empty
    maildrop, nothing locked, nothing created in the spool, and the
    session lock named after the mailbox's name."""
    pop3d_env = user_env
    srv = start_as_user(pop3d_env)
    assert srv.login() == maildrop_line(0, 0)
    assert srv.cmd("STAT") == "+OK 0 0"
    quit_ok(srv, 0)
    srv.wait(0)
    assert os.listdir(pop3d_env.mail) == []
    assert (pop3d_env.state_dir() / "new-alice.lock").is_file()


LONG_FROM_4097 = b"From " + b"s" * (4097 - len(FROM) - 1) + FROM[4:]

NOT_MBOX = {
    "gzip": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)),
    "nul-first": b"\0" + FROM + b"\nSubject: x\n\nbody\n",
    "bom-first": b"\xef\xbb\xbf" + FROM + b"\nSubject: x\n\nbody\n",
    "cr-first": b"\r\n" + FROM + b"\r\nSubject: x\r\n\r\nbody\r\n",
    "space-first": b" " + FROM + b"\nSubject: x\n\nbody\n",
    "from-line-too-long": LONG_FROM_4097 + b"\nSubject: x\n\nbody\n",
    "one-long-line": b"x" * (3 * CHUNK + 17),
    "from-colon": b"From: a@b\nSubject: x\n\nbody\n",
    "lowercase-from": b"from a@b Mon Jan  1 12:00:00 2024\nSubject: x\n\n",
}


@pytest.mark.parametrize("name", sorted(NOT_MBOX))
def test_not_mbox_untouched(pop3d_env, name):
    assert len(LONG_FROM_4097) == 4097
    path = pop3d_env.write_mbox(NOT_MBOX[name])
    age(path)
    before = snapshot(path)
    refused(pop3d_env, NOTMBOX)
    assert snapshot(path) == before


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("length", [4094, 4095, 4096])
def test_longest_from_lines(pop3d_env, length, eol):
    """From_ lines of up to 4096 bytes (terminator not counted) are
    separators: served, and deletable like any other."""
    def from_line(k):
        f = b"From %d" % k
        f += b"s" * (length - len(f) - len(FROM[4:])) + FROM[4:]
        assert len(f) == length
        return f
    msgs = [b"Subject: m%d" % k + eol + eol + b"body %d" % k + eol
            for k in (1, 2, 3)]
    chunks = [from_line(k) + eol + m + eol for k, m in zip((1, 2, 3), msgs)]
    path = pop3d_env.write_mbox(b"".join(chunks))
    wires = [m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for m in msgs]
    srv = pop3d_env.start()
    assert srv.login() == maildrop_line(3, sum(map(len, wires)))
    for k in (1, 2, 3):
        assert srv.multi(f"RETR {k}")[1] == wires[k - 1]
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    r = srv.cmd("QUIT")
    assert r == "+OK pop3d signing off (2 messages left)", \
        f"QUIT answered {r!r}\nlog:\n{srv.log}"
    srv.finish(0)
    assert path.read_bytes() == chunks[0] + chunks[2]


# ---- other programs changing the file between parse and commit ---------------------

def with_status(chunk, status=b"Status: RO\n"):
    """What mutt does: a Status: header before the end of the header."""
    i = chunk.index(b"\n\n")
    return chunk[:i + 1] + status + chunk[i + 1:]


def rewrite_in_place(path, data):
    """Rewrites the file in place (same inode), as mutt and UW do."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def test_file_shrinks_before_commit(pop3d_env):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    ino = os.stat(path).st_ino
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    left = chunks[0] + chunks[1]
    os.truncate(path, len(left))        # another program removed message 3
    age(path)
    before = snapshot(path)
    assert srv.cmd("QUIT") == CHANGED
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert snapshot(path) == before
    assert path.read_bytes() == left
    assert os.stat(path).st_ino == ino
    assert "shrank or was replaced since it was read; nothing deleted" \
        in srv.log
    assert "commit failed" in srv.log
    assert pop3d_env.leftovers() == []


def mutt_same_size(chunks):
    """Status: RO added to message 1, the same number of bytes taken
    from message 3's body: same size, From_ lines 2 and 3 moved."""
    status = b"Status: RO\n"
    c1 = with_status(chunks[0], status)
    line = b"Body of message 3.\n"
    c3 = chunks[2].replace(line, b"x" * (len(line) - len(status) - 1) + b"\n")
    assert len(c1) + len(c3) == len(chunks[0]) + len(chunks[2])
    return c1 + chunks[1] + c3


@pytest.mark.parametrize("dele", [[1], [2], [3], [1, 3]],
                         ids=lambda d: "dele-" + "-".join(map(str, d)))
def test_same_size_rewrite_with_moved_from_lines(pop3d_env, dele):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    for d in dele:
        assert srv.cmd(f"DELE {d}") == f"+OK Message {d} deleted"
    new = mutt_same_size(chunks)
    assert len(new) == len(data)
    rewrite_in_place(path, new)
    age(path)
    before = snapshot(path)
    assert srv.cmd("QUIT") == CHANGED
    srv.finish(1)
    assert snapshot(path) == before
    assert "nothing deleted" in srv.log
    assert pop3d_env.leftovers() == []


def test_same_size_rewrite_messages_reordered(pop3d_env):
    """Another program swapped messages 1 and 2: the boundaries moved."""
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    rewrite_in_place(path, chunks[1] + chunks[0] + chunks[2])
    age(path)
    before = snapshot(path)
    assert srv.cmd("QUIT") == CHANGED
    srv.finish(1)
    assert snapshot(path) == before


def test_rewrite_with_identical_from_lines(pop3d_env):
    """Messages from one sender in one second have identical From_ lines.
    [A, B, C] is read; the client deletes B; meanwhile a mail reader
    expunges A and a message D of the same length is delivered: the file
    is [B, C, D], the same size, with a From_ line at every old offset.
    Deleting "what is now at B's old offset" would delete C and keep B.
    The commit must refuse, or delete exactly B."""
    sep = b"From cron@host Mon Jan  1 12:00:00 2024\n"

    def msg(tag):
        return sep + (b"Message-ID: <%s@host>\nSubject: alert %s\n\n"
                      b"disk is full\n\n" % (tag, tag))
    a, b, c, d = (msg(t) for t in (b"A", b"B", b"C", b"D"))
    assert len({len(a), len(b), len(c), len(d)}) == 1
    path = pop3d_env.write_mbox(a + b + c)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    rewrite_in_place(path, b + c + d)
    r = srv.cmd("QUIT")
    srv.finish(0 if r.startswith("+OK") else 1)
    got = path.read_bytes()
    if r.startswith("+OK"):
        assert got == c + d, \
            f"QUIT answered {r!r}; the mailbox now holds " \
            f"{re.findall(rb'<(.)@host>', got)} instead of [C, D]"
    else:
        assert r == CHANGED
        assert got == b + c + d


def test_growth_only_rewrite_commits_and_keeps_new_mail(pop3d_env):
    """Rewritten in place with the same bytes, plus mail appended (no
    From_ line moved): only growth, so the commit goes ahead."""
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    ino = os.stat(path).st_ino
    new_mail, _ = make_message(4)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    rewrite_in_place(path, data + new_mail)
    quit_ok(srv, 2)
    srv.wait(0)
    assert path.read_bytes() == chunks[0] + chunks[2] + new_mail
    assert os.stat(path).st_ino == ino
    assert "1 (%d) deleted" % len(wires[1]) in srv.log
    assert pop3d_env.leftovers() == []


def test_growth_inside_last_message_is_refused(pop3d_env):
    """mutt adds Status: to the last message: it grows and no From_ line
    moves, but a message's bytes changed under the session.  The commit
    checks the first bytes of every message it moves, refuses, and deletes
    nothing (the next session sees the new file and can delete)."""
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    c3 = with_status(chunks[2])
    rewrite_in_place(path, chunks[0] + chunks[1] + c3)
    assert srv.cmd("QUIT") == \
        "-ERR [SYS/TEMP] Mailbox was changed by another program"
    srv.wait(1)
    assert path.read_bytes() == chunks[0] + chunks[1] + c3
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    quit_ok(srv, 2)
    srv.wait(0)
    assert path.read_bytes() == chunks[1] + c3


# ---- RETR while the file is truncated under the session ----------------------------

def big_mbox(sizes):
    """Messages whose bodies are `size` bytes of numbered lines."""
    chunks, wires = [], []
    for n, size in enumerate(sizes, 1):
        lines, k, total = [], 0, 0
        while total < size:
            lines.append(b"line %08d of message %d\n" % (k, n))
            total += len(lines[-1])
            k += 1
        c, w = make_message(n, body=b"".join(lines))
        chunks.append(c)
        wires.append(w)
    return chunks, wires


@pytest.mark.parametrize("cut", ["zero", "inside-message-2",
                                 "before-message-2-end"])
def test_retr_after_truncation(pop3d_env, cut):
    chunks, wires = big_mbox([100, 3 * CHUNK, 100])
    path = pop3d_env.write_mbox(b"".join(chunks))
    srv = pop3d_env.login()
    size = {"zero": 0,
            "inside-message-2": len(chunks[0]) + CHUNK + 1000,
            "before-message-2-end": len(chunks[0]) + len(chunks[1]) - 3,
            }[cut]
    os.truncate(path, size)
    announced, body = retr_stream(srv, 2)
    assert announced == len(wires[1])
    assert not body.terminated, \
        f"a complete reply of {body.octets} octets after '+OK {announced} " \
        f"octets' from a truncated file"
    assert body.octets < announced
    srv.wait(1)
    assert "shrank while message 2 was sent" in srv.log
    assert os.path.getsize(path) == size


def test_retr_of_intact_message_after_truncation(pop3d_env):
    """Message 1 is still whole in the truncated file: served exactly."""
    chunks, wires = big_mbox([2 * CHUNK, 100, 100])
    path = pop3d_env.write_mbox(b"".join(chunks))
    srv = pop3d_env.login()
    os.truncate(path, len(chunks[0]) + 10)
    announced, body = retr_stream(srv, 1)
    body.check_exact(len(wires[0]), hashlib.md5(wires[0]).hexdigest())
    assert srv.cmd("QUIT") == "+OK pop3d signing off (3 messages left)"
    srv.finish(0)
    assert os.path.getsize(path) == len(chunks[0]) + 10


def test_truncated_while_retr_streams(pop3d_env):
    """The file is cut to nothing while an 8 MiB message is on its way:
    pop3d must hang up before the terminating line."""
    chunks, wires = big_mbox([100, 8 * MiB])
    path = pop3d_env.write_mbox(b"".join(chunks))
    srv = pop3d_env.login()
    st = srv.cmd("RETR 2")
    assert st == f"+OK {len(wires[1])} octets"
    # Take a little, so that pop3d is in the middle of the message.
    got = 0
    while got < 256 * 1024:
        data = recv_more(srv)
        assert data, "EOF too early"
        got += len(data)
    os.truncate(path, 0)
    rest = BodyStream().read(srv)
    assert not rest.terminated, "a complete reply from a file cut to 0"
    srv.wait(1)
    assert "shrank while message 2 was sent" in srv.log


def test_retr_after_rewrite_never_miscounts(pop3d_env):
    """A mail reader expunged message 1 and new mail arrived (the file is
    as big as before, its bytes moved) before the client asks for
    message 2.  Whatever bytes pop3d then sends, the count after
    "+OK N octets" must hold: an exact reply, or a hang-up before the
    terminating line (mbox.h: MBOX_CHANGED, "the reply is then
    incomplete and the connection must be dropped")."""
    body2 = b"".join(b"a line of forty characters, more or less %03d\n" % k
                     for k in range(200))
    c1, _ = make_message(1, body=b"short\n" * 50)
    c2, w2 = make_message(2, body=body2)
    c3, _ = make_message(3)
    path = pop3d_env.write_mbox(c1 + c2 + c3)
    srv = pop3d_env.login()
    assert srv.cmd("LIST 2") == f"+OK 2 {len(w2)}"
    new_mail, _ = make_message(4, body=b"x\n" * 2000)
    rewrite_in_place(path, c2 + c3 + new_mail)
    assert os.path.getsize(path) >= len(c1 + c2 + c3)
    announced, body = retr_stream(srv, 2)
    assert announced == len(w2)
    if body.terminated:
        assert body.octets == announced, \
            f"'+OK {announced} octets', then a complete reply of " \
            f"{body.octets} octets"
    else:
        srv.wait(1)


def test_final_from_line_ending_in_cr(pop3d_env):
    """A CRLF mailbox whose last line is a From_ line cut after its CR
    (an empty last message): the CR ending the file is the line's
    terminator (tests/fixtures/README.md, lone_cr), for the commit's
    From_ line check as for the parser."""
    c1 = FROM + b"\r\nSubject: a\r\n\r\nbody\r\n\r\n"
    last = b"From b@c Tue Jan  2 12:00:00 2024\r"
    path = pop3d_env.write_mbox(c1 + last)
    srv = pop3d_env.start()
    assert srv.login() == maildrop_line(2, len(b"Subject: a\r\n\r\nbody\r\n"))
    assert srv.cmd("LIST 2") == "+OK 2 0"
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    r = srv.cmd("QUIT")
    assert r == "+OK pop3d signing off (1 messages left)", \
        f"QUIT answered {r!r}\nlog:\n{srv.log}"
    srv.finish(0)
    assert path.read_bytes() == last


@pytest.mark.parametrize("where", ["spool", "state"])
def test_unreadable_planted_journal_does_not_lock_out(user_env, where):
    """A journal the user cannot even read (another account's, 0600) at
    the spool's old journal name or in the state directory: logged and
    ignored, and the mailbox served as it is, at every login."""
    pop3d_env = user_env
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    if where == "spool":
        jnl = pop3d_env.mail / "alice.pop3d-journal"
    else:
        jnl = pop3d_env.state_dir() / f"{path.stat().st_ino}.journal"
    jnl.write_bytes(b"POP3DJN1" + b"\0" * 5000)
    os.chown(jnl, 1001, 1001)
    os.chmod(jnl, 0o600)
    for _ in range(2):
        srv = start_as_user(pop3d_env)
        assert srv.login() == maildrop_line(2, sum(map(len, wires)))
        quit_ok(srv, 2)
        srv.wait(0)
        assert "Permission denied" in srv.log, srv.log
    assert path.read_bytes() == data
    assert jnl.exists()
    jnl.unlink()
