#!/bin/sh
# Checks that tests/run.sh's closing line counts what really ran: it runs
# tests/run.sh and tests/fuzz/run.sh in a scratch tree of stubs (a Makefile,
# unit binaries that print TAP, fuzzers, pytest files) where each scenario
# breaks one thing, and compares the last line and the exit status.  Runs
# as the caller, touches nothing outside its temporary directory; nothing
# invokes it: sh tests/selftest_run.sh.
here=$(cd "$(dirname "$0")/.." && pwd) || exit 1
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
bad=0

# A tree where everything passes: 2 unit results and 1 skip, one fuzzer,
# one passing and one skipped pytest.
base() {
	rm -rf "$tmp/t"
	mkdir -p "$tmp/t/tests/unit" "$tmp/t/tests/fuzz" "$tmp/t/tests/e2e"
	cp "$here/tests/run.sh" "$tmp/t/tests/run.sh"
	cp "$here/tests/fuzz/run.sh" "$tmp/t/tests/fuzz/run.sh"
	cd "$tmp/t" || exit 1
	printf 'units fuzzers:\n\t@echo $@ >>made\n\t@test ! -e break-make\n' \
	    >Makefile
	: >tests/unit/test_a.c
	unit tests/unit/test_a 0 'ok 1 - one' 'ok 2 - two' \
	    'not ok 3 # SKIP three'
	: >tests/fuzz/fuzz_x.c
	fuzzer tests/fuzz/fuzz_x 0 'stat::number_of_executed_units: 1234'
	cat >tests/e2e/test_fine.py <<'EOF'
import pytest


def test_pass():
    assert True


def test_skip():
    pytest.skip("not here")
EOF
}

# unit PATH RC LINE...: a unit binary that prints a TAP plan and LINEs.
unit() {
	u=$1 rc=$2
	shift 2
	{
		echo '#!/bin/sh'
		echo "echo 1..3"
		for l in "$@"; do echo "echo '$l'"; done
		echo "exit $rc"
	} >"$u"
	chmod 755 "$u"
}

# fuzzer PATH RC LINE...: a harness that prints LINEs and exits RC.
fuzzer() {
	u=$1 rc=$2
	shift 2
	{
		echo '#!/bin/sh'
		for l in "$@"; do echo "echo '$l'"; done
		echo "exit $rc"
	} >"$u"
	chmod 755 "$u"
}

# check NAME WANT-RC WANT-LAST-LINE [WANT-LINE]: runs tests/run.sh.
check() {
	POP3D_IN_SELFTEST=1 CHECK_FUZZ_TIME=1 sh tests/run.sh >"$tmp/out" 2>&1
	rc=$?
	last=$(tail -1 "$tmp/out")
	ok=1
	[ "$rc" = "$2" ] || ok=0
	[ "$last" = "$3" ] || ok=0
	[ -z "$4" ] || grep -q -- "$4" "$tmp/out" || ok=0
	[ -s made ] || ok=0	# run.sh asked make to bring the binaries up to date
	if [ "$ok" = 1 ]; then
		echo "ok: $1: exit $rc, \"$last\""
	else
		echo "FAILED: $1: exit $rc, \"$last\" (wanted exit $2, \"$3\"" \
		    "${4:+and a line with \"$4\"})"
		sed 's/^/    /' "$tmp/out"
		bad=$((bad + 1))
	fi
	cd "$here" || exit 1
}

base
check "all pass, a cmocka skip is a skip" 0 "4 passed, 0 failed, 2 skipped" \
    "unit test_a: 2 passed, 0 failed, 1 skipped"

base
unit tests/unit/test_a 1 'ok 1 - one' 'not ok 2 - two' 'ok 3 - three'
check "a failing unit test" 1 "4 passed, 1 failed, 1 skipped"

base
unit tests/unit/test_a 134 'ok 1 - one'
check "a unit binary that aborts after its first test" 1 \
    "3 passed, 1 failed, 1 skipped" "exit status 134 outside a test"

base
unit tests/unit/test_a 0 'ok 1 - one'
check "a unit binary that exits 0 before its plan is done" 1 \
    "3 passed, 1 failed, 1 skipped" "plan 3, 1 results"

base
: >tests/unit/test_b.c
check "a unit binary that was not built" 1 "4 passed, 1 failed, 2 skipped" \
    "unit test_b: FAILED, not built"

base
chmod 644 tests/unit/test_a
check "a unit binary that is not executable" 1 \
    "2 passed, 1 failed, 1 skipped" "unit test_a: FAILED, not built"

base
: >break-make
check "make units fuzzers fails" 1 "4 passed, 1 failed, 2 skipped" \
    "build: make units fuzzers failed"

base
fuzzer tests/fuzz/fuzz_x 77 'SUMMARY: AddressSanitizer: heap-buffer-overflow'
check "a fuzzer that crashes" 1 "3 passed, 1 failed, 2 skipped" \
    "fuzz fuzz_x: FAILED, FINDING"

base
fuzzer tests/fuzz/fuzz_x 0 'usage: not a fuzzer'
check "a fuzzer that exits 0 without running" 1 \
    "3 passed, 1 failed, 2 skipped" "fuzz fuzz_x: FAILED, did not run"

base
rm tests/fuzz/fuzz_x
check "a fuzzer that was not built" 1 "3 passed, 1 failed, 2 skipped" \
    "fuzz fuzz_x: FAILED, not built"

base
printf '#!/bin/sh\necho fuzzing went wrong\nexit 3\n' >tests/fuzz/run.sh
check "fuzz/run.sh fails without a FAILED line" 1 \
    "3 passed, 1 failed, 2 skipped" "run.sh exited 3 without naming"

base
mkdir -p tests/out
printf '%s\n' '<?xml version="1.0"?><testsuites><testsuite name="pytest"' \
    ' tests="100" failures="0" errors="0" skipped="0"/></testsuites>' \
    >tests/out/e2e.xml
cat >tests/e2e/test_fine.py <<'EOF'
import os
import signal


def test_dies():
    os.kill(os.getpid(), signal.SIGKILL)
EOF
check "pytest killed mid-run, an old e2e.xml of 100 passes left behind" 1 \
    "3 passed, 1 failed, 1 skipped" "left no readable"

base
rm tests/e2e/test_fine.py
check "pytest that collects nothing (exit 5, no failure in its xml)" 1 \
    "3 passed, 1 failed, 1 skipped" "pytest exited 5 with no failure"

[ "$bad" = 0 ] && echo "selftest_run: all scenarios behave" ||
	echo "selftest_run: $bad scenarios FAILED"
[ "$bad" = 0 ]
