"""
pop3d -n: the configuration check.  It looks at real files with their real
owners and modes, so it runs without the cwrap wrappers, as real root (and
once as the real user nobody, through setpriv), on scratch paths: -R, -C,
-m SCRATCH/spool/%u, -S, -f, -A.  The PAM service file is the one thing
that must sit in /etc/pam.d: the test uses /etc/pam.d/pop3d when it exists,
else it creates /etc/pam.d/p3cc-RANDOM and removes it afterwards.

Each misconfiguration gives exit status 1 and exactly its one
"pop3d: problem: ..." line on stderr; a good configuration gives 0, an
empty stderr and the settings on stdout.  The check reads only: the tree
under test is the same before and after.

liblockfile's helper is an absolute path compiled in
(CONFCHECK_DOTLOCKFILE); its cases run on a second build of pop3d, made
from the tree's sources in a scratch directory, whose path points into
the scratch tree.
"""
import grp
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import NOBODY, POP3D, REPO

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
PAM_DIR = Path("/etc/pam.d")
MAIL_GID = grp.getgrnam("mail").gr_gid
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
       "ASAN_OPTIONS": "verify_asan_link_order=0:detect_leaks=1"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="pop3d -n checks root's files as root")


@pytest.fixture(scope="module")
def pam_service():
    """A PAM service whose file exists: pop3d's own, or one of ours."""
    if (PAM_DIR / "pop3d").is_file():
        yield "pop3d"
        return
    name = f"p3cc-{secrets.token_hex(4)}"
    path = PAM_DIR / name
    path.write_text("auth required pam_deny.so\naccount required "
                    "pam_deny.so\n")
    os.chmod(path, 0o644)
    try:
        yield name
    finally:
        path.unlink()


def missing_service():
    while True:
        name = f"p3cc-missing-{secrets.token_hex(4)}"
        if not (PAM_DIR / name).exists():
            return name


class Setup:
    """A configuration that would serve, with scratch paths to spoil."""

    def __init__(self, d, service):
        self.dir = d
        self.service = service
        self.run = d / "run"
        self.run.mkdir(mode=0o700)
        self.chroot = self.run / "empty"
        self.chroot.mkdir()
        os.chmod(self.chroot, 0o755)
        self.spool = d / "spool"
        self.spool.mkdir()
        os.chown(self.spool, 0, MAIL_GID)
        os.chmod(self.spool, 0o2775)
        self.state = d / "state"
        self.state.mkdir()
        os.chmod(self.state, 0o755)
        self.passwd = d / "passwd"
        self.passwd.write_text("alice:$y$j9T$xx$yy:alice:\n")
        os.chmod(self.passwd, 0o600)
        self.apop = d / "apop"
        self.apop.write_text("alice:secret\n")
        os.chmod(self.apop, 0o600)
        self.opts = {"-s": service, "-R": str(self.run),
                     "-C": str(self.chroot), "-m": f"{self.spool}/%u",
                     "-S": str(self.state), "-A": str(self.apop),
                     "-u": "nobody"}

    def argv(self, binary=POP3D, **over):
        """pop3d -n with the options, over["X"] replacing -X (None: left
        out)."""
        opts = dict(self.opts)
        for k, v in over.items():
            opts["-" + k] = v
        argv = [binary, "-n"]
        for k, v in opts.items():
            if v is not None:
                argv += [k, v]
        return argv

    def run_check(self, *extra, binary=POP3D, prefix=(), **over):
        argv = list(prefix) + self.argv(binary, **over) + list(extra)
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL, env=ENV)


def tree(d):
    """Every path under d with its owner and mode."""
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[p] = (st.st_uid, st.st_gid, st.st_mode)
    return out


@pytest.fixture
def setup(tmp_path, pam_service):
    return Setup(tmp_path, pam_service)


def settings(stdout):
    out = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(" = ")
        assert sep, f"not a setting line: {line!r}"
        assert name not in out, f"{name} printed twice"
        out[name] = value
    return out


def only_problem(r, line):
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr == f"pop3d: problem: {line}\n"
    settings(r.stdout)       # the settings are printed all the same


def only_warning(r, line):
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stderr == f"pop3d: warning: {line}\n"


# ---- a configuration that would serve --------------------------------------

def test_good_configuration(setup):
    before = tree(setup.dir)
    r = setup.run_check("-P", "10.0.0.0/8,::1", "-t", "900", "-D", "250",
                        "-c")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    s = settings(r.stdout)
    assert s == {
        "version": s["version"], "uid": "0", "auth": "pam",
        "pam_service": setup.service, "apop_file": str(setup.apop),
        "mailbox": f"{setup.spool}/%u", "spool": str(setup.spool),
        "state_dir": str(setup.state), "rundir": str(setup.run),
        "chroot": str(setup.chroot), "prelogin_user": "nobody",
        "timeout": "900", "fail_delay_ms": "250",
        "cleartext": "protected-only", "marked_protected": "no",
        "proxy": "10.0.0.0/8,::1/128", "dotlockfile": "/usr/bin/dotlockfile",
        "log": "syslog", "verbose": "no"}
    assert s["version"] and s["version"][0].isdigit()
    assert tree(setup.dir) == before, "pop3d -n changed the scratch tree"


def test_defaults_printed(setup):
    """Without -R, -C and -S: root's defaults, and the chroot under the
    run directory."""
    r = setup.run_check(R=None, C=None, S=None)
    s = settings(r.stdout)
    assert s["rundir"] == "/run/pop3d"
    assert s["chroot"] == "/run/pop3d/empty"
    assert s["state_dir"] == "/var/lib/pop3d"


def test_password_file_configuration(setup):
    r = setup.run_check("-f", str(setup.passwd), "-d", "-v", "-T")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    s = settings(r.stdout)
    assert s["auth"] == "passwd-file"
    assert s["passwd_file"] == str(setup.passwd)
    assert "pam_service" not in s
    assert (s["log"], s["verbose"], s["marked_protected"]) == \
        ("stderr", "yes", "yes")


def test_missing_run_directory_and_chroot_are_made_later(setup):
    """/run is a tmpfs: the first session makes both; -n makes neither."""
    shutil.rmtree(setup.run)
    r = setup.run_check()
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert not setup.run.exists()


def test_per_user_mailboxes_have_no_spool(setup):
    r = setup.run_check(m="%h/mbox")
    assert r.returncode == 0, r.stderr
    assert settings(r.stdout)["spool"] == "per-user"


def test_check_only_with_recover_is_bad_usage(setup):
    r = setup.run_check("-r", str(setup.dir / "box"))
    assert r.returncode == 2
    assert "usage: pop3d" in r.stderr


# ---- one problem each ------------------------------------------------------

def test_missing_pam_service(setup):
    name = missing_service()
    only_problem(setup.run_check(s=name),
                 f"PAM service file /etc/pam.d/{name}: "
                 "No such file or directory")


def test_pam_service_not_a_file_name(setup):
    only_problem(setup.run_check(s="../passwd"),
                 'PAM service "../passwd": not a file name')


def chmod(path, mode):
    os.chmod(path, mode)


def chown(path, uid, gid):
    os.chown(path, uid, gid)


def test_world_writable_chroot(setup):
    chmod(setup.chroot, 0o777)
    only_problem(setup.run_check(), f"pre-login chroot {setup.chroot}: "
                 "not a directory of root's closed to others")


def test_chroot_not_roots(setup):
    chown(setup.chroot, NOBODY, NOBODY)
    only_problem(setup.run_check(), f"pre-login chroot {setup.chroot}: "
                 "not a directory of root's closed to others")


def test_non_empty_chroot(setup):
    (setup.chroot / "stray").write_text("")
    only_problem(setup.run_check(), f"pre-login chroot {setup.chroot}: "
                 "the pre-login chroot must be empty")


def test_chroot_that_cannot_be_made(setup):
    d = setup.dir / "no" / "empty"
    only_problem(setup.run_check(C=str(d)),
                 f"pre-login chroot {d}: cannot be created: "
                 f"{d.parent}: No such file or directory")


@pytest.mark.parametrize("user", ["p3cc-nosuchaccount", "root"])
def test_no_prelogin_account(setup, user):
    only_problem(setup.run_check(u=user),
                 f'no unprivileged account "{user}" for the pre-login '
                 "process")


def test_run_directory_not_ours(setup):
    chown(setup.run, NOBODY, NOBODY)
    only_problem(setup.run_check(), f"run directory {setup.run}: "
                 "not a directory of uid 0 closed to others")


def test_run_directory_that_cannot_be_made(setup):
    d = setup.dir / "no" / "run"
    only_problem(setup.run_check(R=str(d), C=None),
                 f"run directory {d}: cannot be created: {d.parent}: "
                 "No such file or directory")


DOTLOCK_LINE = ("no dotlock can be made there: not writable by group mail "
                "(chown root:mail; chmod 2775)")


@pytest.mark.parametrize("uid,gid,mode,line", [
    (0, 0, 0o2775, DOTLOCK_LINE),                   # not group mail
    (0, MAIL_GID, 0o755, DOTLOCK_LINE),             # not 2775
    (0, MAIL_GID, 0o2755, DOTLOCK_LINE),
    (0, MAIL_GID, 0o2770, "users cannot reach their mailboxes (chmod 2775)"),
    (0, MAIL_GID, 0o2777,
     "writable by all without the sticky bit (chmod 2775)"),
    (NOBODY, MAIL_GID, 0o2775, "not owned by root (chown root:mail)"),
])
def test_spool_problems(setup, uid, gid, mode, line):
    chown(setup.spool, uid, gid)
    chmod(setup.spool, mode)
    only_problem(setup.run_check(), f"spool {setup.spool}: {line}")


@pytest.mark.parametrize("gid,mode", [(MAIL_GID, 0o775), (0, 0o1777),
                                      (MAIL_GID, 0o3775)])
def test_spool_that_works_but_is_not_debians(setup, gid, mode):
    """Dotlocks can be made (group mail may write, or everyone may, with
    the sticky bit): a warning, and exit 0."""
    chown(setup.spool, 0, gid)
    chmod(setup.spool, mode)
    only_warning(setup.run_check(), f"spool {setup.spool}: mode "
                 f"{mode:04o}, Debian's is root:mail 2775")


def test_missing_spool(setup):
    setup.spool.rmdir()
    only_problem(setup.run_check(),
                 f"spool {setup.spool}: No such file or directory")


def test_unusable_mailbox_template(setup):
    only_problem(setup.run_check(m=f"{setup.spool}/%x"),
                 f'mailbox template "{setup.spool}/%x" gives no usable path')


@pytest.mark.parametrize("kind", ["uid", "mode0775", "mode0757"])
def test_state_directory_problems(setup, kind):
    if kind == "uid":
        chown(setup.state, NOBODY, NOBODY)
    else:
        chmod(setup.state, int(kind[4:], 8))
    only_problem(setup.run_check(), f"state directory {setup.state}: not a "
                 "directory of root's closed to others "
                 "(chown root:root; chmod 755)")


def test_missing_state_directory(setup):
    setup.state.rmdir()
    only_problem(setup.run_check(), f"state directory {setup.state}: No "
                 f"such file or directory (install -d -m 755 {setup.state})")


PASSWD_LINE = "not a regular file of root's closed to others (chmod 600)"


@pytest.mark.parametrize("kind", ["mode0644", "mode0604", "mode0620",
                                  "mode0602", "uid", "directory"])
def test_password_file_problems(setup, kind):
    f = setup.passwd
    if kind == "uid":
        chown(f, NOBODY, NOBODY)
    elif kind == "directory":
        f = setup.dir / "passwd.d"
        f.mkdir(mode=0o700)
    else:
        chmod(f, int(kind[4:], 8))
    only_problem(setup.run_check("-f", str(f)),
                 f"password file {f}: {PASSWD_LINE}")


def test_missing_password_file(setup):
    f = setup.dir / "nopasswd"
    only_problem(setup.run_check("-f", str(f)),
                 f"password file {f}: No such file or directory")


def test_group_readable_password_file_is_a_warning(setup):
    chmod(setup.passwd, 0o640)
    only_warning(setup.run_check("-f", str(setup.passwd)),
                 f"password file {setup.passwd}: readable by its group "
                 "(chmod 600)")


APOP_LINE = ("not a regular file owned by root and closed to others "
             "(chmod 600)")


@pytest.mark.parametrize("kind", ["mode0644", "mode0640", "mode0604",
                                  "mode0660", "uid", "symlink"])
def test_apop_file_problems(setup, kind):
    f = setup.apop
    if kind == "uid":
        chown(f, NOBODY, NOBODY)
    elif kind == "symlink":
        f = setup.dir / "apop-link"
        f.symlink_to(setup.apop)
    else:
        chmod(f, int(kind[4:], 8))
    only_problem(setup.run_check(A=str(f)), f"APOP secrets {f}: {APOP_LINE}")


def test_missing_apop_file(setup):
    f = setup.dir / "noapop"
    only_problem(setup.run_check(A=str(f)),
                 f"APOP secrets {f}: No such file or directory")


def test_problems_are_counted_one_line_each(setup):
    chmod(setup.chroot, 0o777)
    chmod(setup.apop, 0o644)
    setup.state.rmdir()
    name = missing_service()
    r = setup.run_check(s=name)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 4, r.stderr
    assert all(x.startswith("pop3d: problem: ") for x in lines)


# ---- as a user -------------------------------------------------------------

@pytest.fixture
def user_dir():
    d = Path(tempfile.mkdtemp(prefix="pop3d-e2e-confcheck-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_as_a_user_only_the_checks_that_apply(user_dir, pam_service):
    """As nobody: no pre-login account, chroot or state directory (a
    pop3d that is not root uses none); the run directory must be ours, the
    password file readable by us."""
    if not os.access(POP3D, os.X_OK) or \
            os.stat(REPO).st_mode & 0o005 != 0o005:
        pytest.skip("the tree is not reachable for nobody")
    s = Setup(user_dir, pam_service)
    chown(s.run, NOBODY, NOBODY)
    prefix = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}",
              "--clear-groups"]
    s.state.rmdir()                     # not looked at
    chown(s.passwd, NOBODY, NOBODY)
    chown(s.apop, 0, 0)
    r = s.run_check("-f", str(s.passwd), prefix=prefix, A=None, C=None)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    st = settings(r.stdout)
    assert (st["uid"], st["chroot"], st["prelogin_user"]) == \
        (str(NOBODY), "none", "none")
    # Root's 0600 password file cannot be read by nobody.
    chown(s.passwd, 0, 0)
    r = s.run_check("-f", str(s.passwd), prefix=prefix, A=None, C=None)
    only_problem(r, f"password file {s.passwd}: Permission denied")
    # Nor root's APOP secrets: APOP would be offered and always fail.
    r = s.run_check(prefix=prefix, C=None)
    only_problem(r, f"APOP secrets {s.apop}: Permission denied")


# ---- liblockfile's helper --------------------------------------------------

@pytest.fixture(scope="module")
def helper_build(tmp_path_factory):
    """pop3d built from this tree with the helper's path in a scratch
    directory: CONFCHECK_DOTLOCKFILE=SCRATCH/dotlockfile."""
    d = tmp_path_factory.mktemp("confcheck-build")
    src = d / "src"
    src.mkdir()
    for p in REPO.iterdir():
        if p.suffix in (".c", ".h") or p.name == "Makefile":
            shutil.copy2(p, src / p.name)
    helper = d / "dotlockfile"
    r = subprocess.run(
        ["make", "-s", "-j4", "pop3d",
         f"CPPFLAGS=-DCONFCHECK_DOTLOCKFILE='\"{helper}\"'"],
        cwd=src, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    return src / "pop3d", helper


def place_helper(helper, uid, gid, mode):
    shutil.copy2("/usr/bin/dotlockfile", helper)
    os.chown(helper, uid, gid)
    os.chmod(helper, mode)


def test_helper_in_place(setup, helper_build):
    binary, helper = helper_build
    place_helper(helper, 0, MAIL_GID, 0o2755)
    try:
        r = setup.run_check(binary=str(binary))
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert settings(r.stdout)["dotlockfile"] == str(helper)
    finally:
        helper.unlink()


def test_missing_helper(setup, helper_build):
    binary, helper = helper_build
    assert not helper.exists()
    only_problem(setup.run_check(binary=str(binary)),
                 f"liblockfile's helper {helper}: No such file or directory "
                 "(apt-get install liblockfile-bin)")


@pytest.mark.parametrize("uid,gid,mode", [(0, MAIL_GID, 0o755),
                                          (0, 0, 0o2755),
                                          (NOBODY, MAIL_GID, 0o2755),
                                          (0, MAIL_GID, 0o2750),
                                          (0, MAIL_GID, 0o2775)])
def test_helper_not_setgid_mail(setup, helper_build, uid, gid, mode):
    binary, helper = helper_build
    place_helper(helper, uid, gid, mode)
    try:
        only_problem(setup.run_check(binary=str(binary)),
                     f"liblockfile's helper {helper}: not root's, setgid "
                     "mail and executable by all")
    finally:
        helper.unlink()


def test_real_helper(setup):
    """The machine's own /usr/bin/dotlockfile (liblockfile-bin)."""
    if not os.path.exists("/usr/bin/dotlockfile"):
        pytest.skip("liblockfile-bin is not installed")
    r = setup.run_check()
    assert "dotlockfile" not in r.stderr
