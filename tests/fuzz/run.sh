#!/bin/sh
# Runs each libFuzzer harness for $1 seconds (default 60), seeded from the
# fixture corpus and the corpus kept in tests/out/corpus-*.  One line per
# harness: "fuzz NAME: ..., no finding" or "fuzz NAME: FAILED, ...".  Exits
# non-zero on a finding (the crashing input is left in tests/out/), and also
# when a harness of tests/fuzz/fuzz_*.c was not built or did not run.
cd "$(dirname "$0")/../.." || exit 1
secs=${1:-60}
mkdir -p tests/out
status=0
for src in tests/fuzz/fuzz_*.c; do
	[ -e "$src" ] || continue
	f=${src%.c}
	name=$(basename "$f")
	if [ ! -f "$f" ] || [ ! -x "$f" ]; then
		echo "fuzz $name: FAILED, not built ($f missing or not executable)"
		status=1
		continue
	fi
	corpus=tests/out/corpus-$name
	mkdir -p "$corpus"
	# Seeds: tests/fuzz/corpus-NAME for each harness that has one.
	case "$name" in
	fuzz_mbox) cp tests/fixtures/*.mbox demo/sample.mbox "$corpus"/ ;;
	*) [ ! -d tests/fuzz/corpus-"${name#fuzz_}" ] ||
	    cp tests/fuzz/corpus-"${name#fuzz_}"/* "$corpus"/ ;;
	esac
	if ASAN_OPTIONS=detect_leaks=1 "./$f" -max_total_time="$secs" \
	    -max_len=65536 -timeout=10 -rss_limit_mb=1024 \
	    -artifact_prefix=tests/out/"$name"- -print_final_stats=1 \
	    "$corpus" >tests/out/"$name".log 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' \
		    tests/out/"$name".log)
		case "$runs" in
		''|0|*[!0-9]*)
			echo "fuzz $name: FAILED, did not run (no inputs" \
			    "executed), see tests/out/$name.log"
			tail -20 tests/out/"$name".log
			status=1
			;;
		*)
			echo "fuzz $name: ${secs}s, $runs inputs, no finding"
			;;
		esac
	else
		echo "fuzz $name: FAILED, FINDING, see tests/out/$name.log"
		tail -40 tests/out/"$name".log
		status=1
	fi
done
exit $status
