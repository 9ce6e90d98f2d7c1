#!/bin/sh
# Runs every suite (cmocka units, libFuzzer, pytest end-to-end) and ends with one
# line for all of them: "N passed, N failed, N skipped".
cd "$(dirname "$0")/.." || exit 1
out=tests/out
mkdir -p "$out"
passed=0 failed=0 skipped=0

for t in tests/unit/test_*; do
	case "$t" in *.c|*.d|*.o) continue ;; esac
	[ -x "$t" ] || continue
	name=$(basename "$t")
	CMOCKA_MESSAGE_OUTPUT=TAP "./$t" >"$out/$name.tap" 2>&1
	rc=$?
	p=$(grep -c '^ok ' "$out/$name.tap")
	f=$(grep -c '^not ok ' "$out/$name.tap")
	if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		f=1	# crashed or failed outside a test
	fi
	[ "$f" != 0 ] && sed 's/^/    /' "$out/$name.tap"
	echo "unit $name: $p passed, $f failed"
	passed=$((passed + p))
	failed=$((failed + f))
done

# The fuzzers, briefly (make fuzz FUZZ_TIME=600 runs them for longer).
sh tests/fuzz/run.sh "${CHECK_FUZZ_TIME:-20}" >"$out/fuzz.txt" 2>&1
cat "$out/fuzz.txt"
p=$(grep -c 'no finding' "$out/fuzz.txt")
f=$(grep -c 'FINDING' "$out/fuzz.txt")
passed=$((passed + p))
failed=$((failed + f))

/usr/bin/python3 -m pytest -q -rfEs -p no:cacheprovider \
    --junitxml="$out/e2e.xml" tests/e2e
rc=$?
if [ -f "$out/e2e.xml" ]; then
	set -- $(/usr/bin/python3 - "$out/e2e.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
t, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
print(t - f - e - k, f + e, k)
PY
)
	passed=$((passed + $1))
	failed=$((failed + $2))
	skipped=$((skipped + $3))
	[ "$rc" != 0 ] && [ "$2" = 0 ] && failed=$((failed + 1))
else
	failed=$((failed + 1))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
