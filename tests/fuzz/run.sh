#!/bin/sh
# Runs each libFuzzer harness for $1 seconds (default 60), seeded from the
# fixture corpus and the corpus kept in tests/out/corpus-*.  Exits non-zero
# on a finding; the crashing input is left in tests/out/.
cd "$(dirname "$0")/../.." || exit 1
secs=${1:-60}
mkdir -p tests/out
status=0
for f in tests/fuzz/fuzz_*; do
	case "$f" in *.c|*.sh) continue ;; esac
	name=$(basename "$f")
	corpus=tests/out/corpus-$name
	mkdir -p "$corpus"
	case "$name" in
	fuzz_mbox) cp tests/fixtures/*.mbox demo/sample.mbox "$corpus"/ ;;
	fuzz_session) cp tests/fuzz/corpus-session/* "$corpus"/ ;;
	fuzz_proxy) cp tests/fuzz/corpus-proxy/* "$corpus"/ ;;
	esac
	if ASAN_OPTIONS=detect_leaks=1 "./$f" -max_total_time="$secs" \
	    -max_len=65536 -timeout=10 -rss_limit_mb=1024 \
	    -artifact_prefix=tests/out/"$name"- -print_final_stats=1 \
	    "$corpus" >tests/out/"$name".log 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' \
		    tests/out/"$name".log)
		echo "fuzz $name: ${secs}s, $runs inputs, no finding"
	else
		echo "fuzz $name: FINDING, see tests/out/$name.log"
		tail -40 tests/out/"$name".log
		status=1
	fi
done
exit $status
