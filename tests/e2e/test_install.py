"""What `make install` puts on a system, and whether it is sound: the file
list and modes under DESTDIR, the paths rewritten for PREFIX, configuration
files never overwritten, `make uninstall`, the man page (renders, no groff
warnings, documents every option), and the systemd units
(systemd-analyze verify and security).

make runs on a copy of the files install uses (Makefile, the built pop3d,
pop3d.8, pam.d, xinetd.d, systemd, stunnel) with `-o pop3d`, so that it
never rebuilds or touches the tree under test (the Makefile rewrites .flags
and rebuilds everything when the flags differ, e.g. after make SANITIZE=1).
Every make gets a DESTDIR: without one, install would create the pop3d
account on this machine.
"""
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import POP3D, REPO

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SBIN = "/usr/sbin/pop3d"

# DESTDIR-relative path -> mode, for PREFIX=/usr.
INSTALLED = {
    "usr/sbin/pop3d": 0o755,
    "usr/share/man/man8/pop3d.8": 0o644,
    "etc/pam.d/pop3d": 0o644,
    "etc/xinetd.d/pop3d": 0o644,
    "etc/systemd/system/pop3d.socket": 0o644,
    "etc/systemd/system/pop3d@.service": 0o644,
    "usr/share/doc/pop3d/examples/stunnel-pop3s.conf": 0o644,
    "usr/share/doc/pop3d/examples/stunnel-pop3-starttls.conf": 0o644,
    "usr/share/doc/pop3d/examples/fail2ban-filter-pop3d.conf": 0o644,
    "usr/share/doc/pop3d/examples/fail2ban-jail-pop3d.conf": 0o644,
    "usr/share/doc/pop3d/examples/xinetd-pop3d": 0o644,
    "usr/share/doc/pop3d/examples/xinetd-pop3s": 0o644,
}
SOURCES = ["Makefile", "pop3d.8", "pam.d", "xinetd.d", "systemd", "stunnel",
           "fail2ban"]


@pytest.fixture
def src(tmp_path):
    """A copy of what make install reads, with the built binary."""
    d = tmp_path / "src"
    d.mkdir()
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, d / name)
        else:
            shutil.copy2(p, d / name)
    assert os.access(POP3D, os.X_OK), f"{POP3D} not built (make all)"
    shutil.copy2(POP3D, d / "pop3d")
    return d


def make(src, target, destdir, umask=0o022, prefix="/usr"):
    assert str(destdir).startswith("/") and str(destdir) != "/"
    env = {"PATH": PATH, "LC_ALL": "C"}     # no MAKEFLAGS from make check
    r = subprocess.run(
        ["make", "--no-print-directory", "-C", str(src), "-o", "pop3d",
         target, f"DESTDIR={destdir}", f"PREFIX={prefix}"],
        env=env, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: os.umask(umask))
    assert r.returncode == 0, f"make {target}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def tree(root):
    """{relative path: mode} of the files under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


# ---- make install ----------------------------------------------------------

def test_install_files(src, tmp_path):
    dest = tmp_path / "dest"
    make(src, "install", dest)
    assert tree(dest) == INSTALLED
    # Directories are 0755.
    for dirpath, dirs, files in os.walk(dest):
        for d in dirs:
            m = stat.S_IMODE((Path(dirpath) / d).stat().st_mode)
            assert m == 0o755, (dirpath, d, oct(m))
    assert (dest / "usr/sbin/pop3d").read_bytes() == \
        Path(POP3D).read_bytes()
    assert (dest / "etc/pam.d/pop3d").read_bytes() == \
        (REPO / "pam.d/pop3d").read_bytes()
    assert (dest / "etc/systemd/system/pop3d.socket").read_bytes() == \
        (REPO / "systemd/pop3d.socket").read_bytes()
    # The man page, with or without its paths rewritten (see below).
    local = "/usr/local/sbin/pop3d"
    assert (dest / "usr/share/man/man8/pop3d.8").read_text().replace(
        local, SBIN) == (REPO / "pop3d.8").read_text().replace(local, SBIN)

    # The installed service, xinetd file and examples run /usr/sbin/pop3d.
    svc = (dest / "etc/systemd/system/pop3d@.service").read_text()
    assert re.findall(r"(?m)^ExecStart=(.*)$", svc) == [SBIN]
    assert svc == (REPO / "systemd/pop3d@.service").read_text().replace(
        "/usr/local/sbin/pop3d", SBIN)
    for f in ("etc/xinetd.d/pop3d",
              "usr/share/doc/pop3d/examples/xinetd-pop3d",
              "usr/share/doc/pop3d/examples/xinetd-pop3s"):
        xi = (dest / f).read_text()
        assert re.findall(r"(?m)^\s*server\s*=\s*(\S+)\s*$", xi) == [SBIN], f
    st = (dest / "usr/share/doc/pop3d/examples/stunnel-pop3s.conf").read_text()
    assert re.findall(r"(?m)^;\s*exec\s*=\s*(\S+)$", st) == [SBIN]
    st = (dest / "usr/share/doc/pop3d/examples/"
          "stunnel-pop3-starttls.conf").read_text()
    assert re.findall(r"(?m)^exec\s*=\s*(\S+)$", st) == [SBIN]
    for f in INSTALLED:
        if f != "usr/sbin/pop3d" and f != "usr/share/man/man8/pop3d.8":
            assert "/usr/local" not in (dest / f).read_text(), f


def test_installed_man_page_names_the_installed_binary(src, tmp_path):
    """With PREFIX=/usr, the installed pop3d(8) should show /usr/sbin/pop3d
    in its EXAMPLES (xinetd server, ExecStart, systemd-socket-activate), as
    every other installed file does; install copies it unchanged, so it
    shows /usr/local/sbin/pop3d, which does not exist."""
    dest = tmp_path / "dest"
    make(src, "install", dest)
    man = (dest / "usr/share/man/man8/pop3d.8").read_text()
    assert "/usr/local/sbin/pop3d" not in man, \
        [x for x in man.splitlines() if "/usr/local" in x]
    assert SBIN in man


def test_install_modes_do_not_depend_on_umask(src, tmp_path):
    """The files install writes with sed > file (xinetd.d/pop3d,
    pop3d@.service, both examples) get 0666 & ~umask, unlike the ones it
    installs with install -m 644: group-writable root-run configuration
    under umask 002, unreadable documentation under umask 077."""
    bad = {}
    for umask in (0o002, 0o077):
        dest = tmp_path / f"dest-{umask:03o}"
        make(src, "install", dest, umask=umask)
        got = tree(dest)
        assert set(got) == set(INSTALLED)
        for f, mode in got.items():
            if mode != INSTALLED[f]:
                bad[f"umask {umask:03o}: {f}"] = oct(mode)
    assert bad == {}


def test_install_keeps_existing_configuration(src, tmp_path):
    dest = tmp_path / "dest"
    pam = dest / "etc/pam.d/pop3d"
    xinetd = dest / "etc/xinetd.d/pop3d"
    for p, text in ((pam, "auth required pam_deny.so\n"),
                    (xinetd, "service pop3\n{\n\tdisable = yes\n}\n")):
        p.parent.mkdir(parents=True)
        p.write_text(text)
        p.chmod(0o640)
    make(src, "install", dest)
    assert pam.read_text() == "auth required pam_deny.so\n"
    assert xinetd.read_text() == "service pop3\n{\n\tdisable = yes\n}\n"
    assert stat.S_IMODE(pam.stat().st_mode) == 0o640
    assert set(tree(dest)) == set(INSTALLED)
    # Install again over an installed tree: still the same files.
    make(src, "install", dest)
    assert pam.read_text() == "auth required pam_deny.so\n"
    # Uninstall leaves both: they are not what install would have put.
    make(src, "uninstall", dest)
    assert tree(dest) == {"etc/pam.d/pop3d": 0o640,
                          "etc/xinetd.d/pop3d": 0o640}


# ---- make uninstall --------------------------------------------------------

def test_uninstall_removes_everything(src, tmp_path):
    dest = tmp_path / "dest"
    make(src, "install", dest)
    make(src, "uninstall", dest)
    assert tree(dest) == {}
    assert not (dest / "usr/share/doc/pop3d").exists()
    # A second uninstall finds nothing to do and does not fail.
    make(src, "uninstall", dest)


def test_uninstall_keeps_changed_pam_file(src, tmp_path):
    dest = tmp_path / "dest"
    make(src, "install", dest)
    pam = dest / "etc/pam.d/pop3d"
    changed = pam.read_text() + "session optional pam_keyinit.so\n"
    pam.write_text(changed)
    make(src, "uninstall", dest)
    assert tree(dest) == {"etc/pam.d/pop3d": 0o644}
    assert pam.read_text() == changed


# ---- the man page ----------------------------------------------------------

def test_man_page_renders():
    r = subprocess.run(["man", "-l", str(REPO / "pop3d.8")],
                       env={"PATH": PATH, "LC_ALL": "C.UTF-8",
                            "MANPAGER": "cat", "PAGER": "cat",
                            "MANWIDTH": "80"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = re.sub(".\b", "", r.stdout)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "EXIT STATUS",
                    "LOGGING", "EXAMPLES", "SEE ALSO"):
        assert re.search(rf"(?m)^{section}$", out), section
    assert re.search(r"pop3d (-|\u2014) POP3 server for Unix mbox mail spools",
                     out), out[:300]


def test_man_page_has_no_groff_warnings():
    r = subprocess.run(["groff", "-ww", "-mandoc", "-Tutf8",
                        str(REPO / "pop3d.8")],
                       env={"PATH": PATH, "LC_ALL": "C.UTF-8"},
                       capture_output=True, timeout=30)
    assert r.returncode == 0
    assert r.stderr == b""
    assert b"POP3D(8)" in r.stdout


def usage_options():
    """Option letters in pop3d's usage message (bad usage: exit 2)."""
    r = subprocess.run([POP3D, "-x"], capture_output=True, text=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    usage = r.stderr[r.stderr.index("usage: pop3d"):]
    opts = set()
    for group in re.findall(r"\[-([^\]]+)\]", usage):
        for alt in group.split("|"):            # [-l mailbox | -r mailbox]
            alt = alt.strip().lstrip("-")
            if " " in alt:
                opts.add(alt.split()[0])        # [-A apop-file]
            else:
                opts.update(alt)                # [-cdTVv]
    return opts, usage


def test_man_page_documents_every_option():
    opts, usage = usage_options()
    assert len(opts) >= 16, usage
    man = (REPO / "pop3d.8").read_text()
    documented = set(re.findall(r"(?m)^\.It Fl (\w)\b", man))
    assert opts - documented == set(), "options missing from pop3d.8"
    assert documented - opts == set(), "pop3d.8 documents unknown options"
    # And every option pop3d accepts is in its usage message.
    src = (REPO / "pop3d.c").read_text()
    m = re.search(r'getopt\(argc, argv,\s*"([^"]+)"\)', src)
    assert m
    assert set(m.group(1).replace(":", "")) == opts, usage


# ---- the systemd units -----------------------------------------------------

@pytest.fixture
def units(tmp_path):
    """The shipped units, the service running the built binary."""
    d = tmp_path / "units"
    d.mkdir()
    shutil.copy(REPO / "systemd/pop3d.socket", d / "pop3d.socket")
    svc = (REPO / "systemd/pop3d@.service").read_text()
    assert "ExecStart=/usr/local/sbin/pop3d\n" in svc
    (d / "pop3d@.service").write_text(
        svc.replace("ExecStart=/usr/local/sbin/pop3d",
                    f"ExecStart={os.path.abspath(POP3D)}"))
    return d


def systemd_analyze(*args, cwd):
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze missing: make check installs systemd"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": PATH, "LC_ALL": "C.UTF-8",
                               "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})


def test_units_verify(units):
    for unit in ("pop3d.socket", "pop3d@.service", "pop3d@1.service"):
        r = systemd_analyze("verify", "--man=no", str(units / unit),
                            cwd=units)
        assert r.returncode == 0 and r.stdout + r.stderr == "", \
            (unit, r.stdout, r.stderr)
    sock = (units / "pop3d.socket").read_text()
    assert re.search(r"(?m)^Accept=yes$", sock)
    assert re.search(r"(?m)^ListenStream=110$", sock)
    svc = (units / "pop3d@.service").read_text()
    assert re.search(r"(?m)^StandardInput=socket$", svc)


def test_service_exposure(units):
    r = systemd_analyze("security", "--offline=yes", "--no-pager",
                        str(units / "pop3d@.service"), cwd=units)
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) <= 5.0, r.stdout
