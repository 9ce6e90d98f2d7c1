"""What the dotlock costs a pop3d session, helper or not (issue 11).

A session holds the user's uid and primary gid and no other group, so it
cannot create MAILBOX.lock in a spool that only the mail group may write
(/var/mail is root:mail 2775).  liblockfile then runs its setgid helper,
/usr/bin/dotlockfile, once to lock and once to unlock: a fork and an exec
each.  In a spool the user may write, liblockfile makes the lock itself.

Two more pop3d launchers (the tree's binary, the benchmark's user) serve
the same 10-message mailbox from two spools side by side on the spool's
file system.  They check the password against a password file (-f) with
a cheap hash (SHA-512 crypt, 1,000 rounds), not through PAM: PAM's
yescrypt costs tens of milliseconds, with as many of noise on a busy
machine, and would hide a difference of a few.

  helper   SPOOLS/spool-mail, root:mail 2775, as /var/mail
  own      SPOOLS/spool-own, the user's own directory (0755)

and sessions alternate between them (untimed mailbox reset between
sessions): login+STAT+QUIT (one lock and unlock, to parse) and
login+STAT+DELE 1+QUIT (a second lock and unlock, to commit).  The
helper's own cost is measured apart as well: dotlockfile -l and -u run by
the user from sh, beside two runs of /bin/true (the fork+exec alone).
"""

import grp
import os
import shutil
import statistics
import subprocess
import time
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated in 3.11, still present; for the -f hash

import peers

HOST = peers.HOST
USER = peers.USER
PW = peers.PASSWORD
HELPER = "/usr/bin/dotlockfile"


class SpoolPeer(peers.Pop3dPeer):
    """The tree's pop3d with its own spool (-m) and state directory."""

    def __init__(self, setup, name, spool, state, passwd):
        super().__init__(setup)
        self.passwd = passwd
        self.name = name
        self.spool = spool
        self.state = state

    def command(self):
        cmd = super().command()
        if "-S" in cmd:
            cmd[cmd.index("-S") + 1] = self.state
        return cmd + ["-m", os.path.join(self.spool, "%u"), "-f",
                      self.passwd, "-D", "0"]

    def mailbox(self):
        return os.path.join(self.spool, USER)


def _mkdir(path, uid, gid, mode):
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


class Dotlock:
    def __init__(self, setup, base, client):
        self.setup = setup
        self.client = client
        self.base = base
        self.peers = {}
        self.mail_gid = grp.getgrnam("mail").gr_gid

    def start(self):
        s = self.setup
        root = os.path.join(self.base, "p3bench-spools")
        if os.path.exists(root):
            shutil.rmtree(root)
        s._later("spools " + root,
                 lambda: shutil.rmtree(root, ignore_errors=True))
        _mkdir(root, 0, 0, 0o755)
        # USER's entry: name, hash, the system account it maps to.
        passwd = os.path.join(root, "passwd")
        with open(passwd, "w") as f:
            f.write("%s:%s:%s:\n" % (USER, crypt.crypt(
                PW, crypt.mksalt(crypt.METHOD_SHA512, rounds=1000)), USER))
        os.chmod(passwd, 0o600)
        spools = {"helper": (os.path.join(root, "spool-mail"), 0,
                             self.mail_gid, 0o2775),
                  "own": (os.path.join(root, "spool-own"), s.uid, s.gid,
                          0o755)}
        for name, (path, uid, gid, mode) in spools.items():
            _mkdir(path, uid, gid, mode)
            state = os.path.join(root, "state-" + name)
            _mkdir(state, 0, 0, 0o755)
            p = SpoolPeer(s, "pop3d-" + name, path, state, passwd)
            s._later("peer " + p.name, p.stop)
            p.start()
            self.peers[name] = p
            peers.log("%s on %s:%d serves %s" % (p.name, HOST, p.port,
                                                  p.mailbox()))

    def reset(self, name, src):
        p = self.peers[name]
        p.quiesce()
        mbox = p.mailbox()
        for q in (mbox + ".lock",):
            if os.path.exists(q):
                os.unlink(q)
        tmp = mbox + ".p3bench-tmp"
        shutil.copyfile(src, tmp)
        if name == "helper":
            os.chown(tmp, self.setup.uid, self.mail_gid)
            os.chmod(tmp, 0o660)
        else:
            os.chown(tmp, self.setup.uid, self.setup.gid)
            os.chmod(tmp, 0o600)
        past = time.time() - 3600
        os.utime(tmp, (past, past))
        os.replace(tmp, mbox)

    def measure(self, src, sessions, can_commit):
        """{(kind, spool): [ms]}: kind stat (whole session), dele (whole
        session), dele_quit (QUIT -> +OK); spool helper or own."""
        out = {}
        kinds = ("stat", "dele") if can_commit else ("stat",)
        for name in self.peers:
            self.reset(name, src)
            # One untimed session each: the index exists, the launcher
            # and the page cache are warm.
            self.client.session_ms(HOST, self.peers[name].port, USER, PW)
        for i in range(sessions):
            for kind in kinds:
                order = ("helper", "own") if i % 2 == 0 else ("own",
                                                              "helper")
                for name in order:
                    self.reset(name, src)
                    total, quit_ms = self.client.session_ms(
                        HOST, self.peers[name].port, USER, PW,
                        dele=(kind == "dele"))
                    out.setdefault((kind, name), []).append(total)
                    if kind == "dele":
                        out.setdefault(("dele_quit", name), []).append(
                            quit_ms)
        return out

    def helper_ms(self, rounds=100):
        """(ms per dotlockfile -l + -u pair, ms per two /bin/true) from
        sh, as the user with no supplementary group, in the helper
        spool."""
        # The setgid helper makes only MAILBOX.lock for a mailbox of the
        # caller's own.
        self.peers["helper"].quiesce()
        lock = self.peers["helper"].mailbox() + ".lock"
        ids = ["setpriv", "--reuid=%d" % self.setup.uid,
               "--regid=%d" % self.setup.gid, "--clear-groups", "--"]
        loops = {
            "helper": 'i=0; while [ $i -lt %d ]; do %s -l -r 0 %s || exit 1;'
                      ' %s -u %s || exit 1; i=$((i+1)); done'
                      % (rounds, HELPER, lock, HELPER, lock),
            "true": 'i=0; while [ $i -lt %d ]; do /bin/true; /bin/true; '
                    'i=$((i+1)); done' % rounds,
        }
        res = {}
        for k, script in loops.items():
            v = []
            for _ in range(3):
                t0 = time.perf_counter()
                subprocess.run(ids + ["sh", "-c", script], check=True,
                               stdin=subprocess.DEVNULL)
                v.append((time.perf_counter() - t0) * 1e3 / rounds)
            res[k] = statistics.median(v)
        return res["helper"], res["true"]

    def stop(self):
        for p in self.peers.values():
            p.stop()
