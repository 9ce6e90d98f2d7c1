"""The real binary under valgrind (memcheck), following the pre-login and
authentication processes it forks: a session with every command,
failed logins, an over-long line, and a commit; then the error paths of
a refused mailbox.  No invalid access, no definite or indirect leak.  (The
ASan/UBSan build is covered by `make check SANITIZE=1`; valgrind cannot run
an ASan binary, so there each case reports a skip that says so.)"""
import shutil
import subprocess

import pytest

from conftest import HERE, POP3D, build_mbox

SUPP = HERE / "valgrind.supp"


def is_asan_build():
    """The binary calls ASan's runtime (the symbol name is in its dynamic
    symbol table, which is what nm -D or strings would show)."""
    with open(POP3D, "rb") as f:
        return b"__asan_init" in f.read()


def valgrind(pop3d_env, commands, args=()):
    log = pop3d_env.tmp / "valgrind.log"
    argv = ["valgrind", "--quiet", "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99", f"--log-file={log}",
            f"--suppressions={SUPP}"] + \
        pop3d_env.argv(args)
    p = subprocess.run(argv, input=commands, env=pop3d_env.env(),
                       capture_output=True, timeout=120)
    return p, log.read_text()


@pytest.mark.parametrize("script,expect_rc", [
    (b"CAPA\r\nUSER mallory\r\nPASS nope\r\nUSER alice\r\nPASS secret\r\n"
     b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\nRETR 1\r\nTOP 2 1\r\n"
     b"DELE 2\r\nRETR 2\r\nRSET\r\nDELE 1\r\nNOOP\r\n" + b"X" * 300 +
     b"\r\nBOGUS\r\nLIST 99999999999999999999\r\nQUIT\r\n", 0),
    (b"USER alice\r\nPASS secret\r\nDELE 1\r\n", 1),      # disconnect
    (b"USER a\r\nPASS b\r\nUSER a\r\nPASS b\r\nUSER a\r\nPASS b\r\n", 1),
], ids=["full-session", "disconnect", "three-failures"])
def test_memcheck_clean(pop3d_env, script, expect_rc):
    if is_asan_build():
        pytest.skip(f"{POP3D} is an ASan build, which valgrind cannot run "
                    "(the sanitizers check it)")
    assert shutil.which("valgrind"), "make check installs valgrind"
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    p, report = valgrind(pop3d_env, script)
    assert p.returncode == expect_rc, (p.returncode, report,
                                       p.stderr.decode())
    assert report.strip() == "", report
    if expect_rc == 0:
        assert path.read_bytes() == chunks[1] + chunks[2]
    else:
        assert path.read_bytes() == data
