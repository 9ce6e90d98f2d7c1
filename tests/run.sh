#!/bin/sh
# Runs every suite (cmocka units, libFuzzer, pytest end-to-end) and ends with one
# line for all of them: "N passed, N failed, N skipped".  Runs as the caller
# (root for the end-to-end suites); writes only under tests/out.
#
# The line counts what really ran.  Anything that should have run and did
# not is a failure, never a silence: a unit binary or fuzzer that is missing
# or could not be built, a unit that stopped before its plan was done, a
# fuzz/run.sh or pytest that exited non-zero without saying why.
#
# The unit binaries and fuzzers are brought up to date first with
# "${MAKE:-make} units fuzzers" (a no-op under "make check", which has just
# built them, and which passes its variables such as SANITIZE=1 down in
# MAKEFLAGS; run by hand after "make SANITIZE=1", say
# "MAKEFLAGS=SANITIZE=1 sh tests/run.sh").
cd "$(dirname "$0")/.." || exit 1
out=tests/out
mkdir -p "$out"
passed=0 failed=0 skipped=0

fail() {
	echo "$1"
	failed=$((failed + 1))
}

if ! ${MAKE:-make} -s --no-print-directory units fuzzers \
    >"$out/build.txt" 2>&1; then
	sed 's/^/    /' "$out/build.txt" | tail -40
	fail "build: make units fuzzers failed, see $out/build.txt"
fi

# One binary per tests/unit/test_*.c; the set of sources is the list.
for src in tests/unit/test_*.c; do
	[ -e "$src" ] || continue
	t=${src%.c}
	name=$(basename "$t")
	if [ ! -f "$t" ] || [ ! -x "$t" ]; then
		fail "unit $name: FAILED, not built ($t missing or not executable)"
		continue
	fi
	CMOCKA_MESSAGE_OUTPUT=TAP "./$t" >"$out/$name.tap" 2>&1
	rc=$?
	# cmocka 1.1.5 prints a skip as "not ok N # SKIP name".
	k=$(grep -c '^\(not \)\{0,1\}ok [0-9]* *# *SKIP' "$out/$name.tap")
	p=$(grep '^ok ' "$out/$name.tap" | grep -vc '^ok [0-9]* *# *SKIP')
	f=$(grep '^not ok ' "$out/$name.tap" | grep -vc '^not ok [0-9]* *# *SKIP')
	# One plan line per cmocka group: their sum is what should run.
	plan=$(awk '/^1\.\.[0-9]/ { s += substr($1, 4); n++ }
	    END { if (n) print s }' "$out/$name.tap")
	n=$((p + f + k)) why=
	if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		f=1 why=" (exit status $rc outside a test)"
	elif [ "${plan:-none}" != "$n" ]; then
		f=$((f + 1)) why=" (plan ${plan:-missing}, $n results)"
	fi
	[ "$f" != 0 ] && sed 's/^/    /' "$out/$name.tap"
	echo "unit $name: $p passed, $f failed, $k skipped$why"
	passed=$((passed + p))
	failed=$((failed + f))
	skipped=$((skipped + k))
done

# The fuzzers, briefly (make fuzz FUZZ_TIME=600 runs them for longer).
sh tests/fuzz/run.sh "${CHECK_FUZZ_TIME:-20}" >"$out/fuzz.txt" 2>&1
rc=$?
cat "$out/fuzz.txt"
p=$(grep -c '^fuzz .*: .*no finding$' "$out/fuzz.txt")
f=$(grep -c '^fuzz .*: FAILED' "$out/fuzz.txt")
passed=$((passed + p))
failed=$((failed + f))
[ "$rc" != 0 ] && [ "$f" = 0 ] &&
	fail "fuzz: tests/fuzz/run.sh exited $rc without naming a failure"

# One pytest suite (a directory with its own conftest.py), counted from its
# junit xml.  A pytest that dies leaves no xml (or a partial one): never an
# old one.
suite() {
	name=$1 dir=$2
	rm -f "$out/$name.xml"
	/usr/bin/python3 -m pytest -q -rfEs -p no:cacheprovider \
	    --junitxml="$out/$name.xml" "$dir"
	rc=$?
	set --
	[ -f "$out/$name.xml" ] && set -- $(/usr/bin/python3 - \
	    "$out/$name.xml" 2>/dev/null <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
t, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
print(t - f - e - k, f + e, k)
PY
)
	if [ $# = 3 ]; then
		echo "$name: $1 passed, $2 failed, $3 skipped"
		passed=$((passed + $1))
		failed=$((failed + $2))
		skipped=$((skipped + $3))
		[ "$rc" != 0 ] && [ "$2" = 0 ] &&
			fail "$name: pytest exited $rc with no failure in its report"
	else
		fail "$name: pytest exited $rc and left no readable $out/$name.xml"
	fi
}

# This script's own counting, on a scratch tree of stubs (where the
# self-test runs this script, it does not run itself again).
if [ -n "${POP3D_IN_SELFTEST:-}" ]; then
	:
elif sh tests/selftest_run.sh >"$out/selftest_run.txt" 2>&1; then
	echo "selftest_run: 1 passed"
	passed=$((passed + 1))
else
	sed 's/^/    /' "$out/selftest_run.txt"
	fail "selftest_run: FAILED, see $out/selftest_run.txt"
fi

# The end-to-end suite (cwrap wrappers), the real-root suite (real
# accounts, pam_unix, the kernel's own credentials) and the several-hosts
# suite (GlusterFS, HAProxy).
suite e2e tests/e2e
for d in root multihost; do
	[ -d "tests/$d" ] && suite "$d" "tests/$d"
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
