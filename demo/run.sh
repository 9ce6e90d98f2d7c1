#!/bin/sh
# The demo: serves demo/sample.mbox for the user "demo" (password "demo")
# on 127.0.0.1:${PORT:-8110}, runs one scripted session, and, on a
# terminal, keeps serving until Enter is pressed.  pop3d runs as an
# ordinary user (nobody, when started as root), the way an administrator
# runs it by hand to look at a mailbox.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-8110}
dir=$(mktemp -d /tmp/pop3d-demo.XXXXXX)
chmod 755 "$dir"
cp "$top/demo/sample.mbox" "$dir/demo.mbox"
mkdir "$dir/run"

if [ "$(id -u)" = 0 ]; then
	account=nobody
	chown -R nobody:nogroup "$dir"
	cp "$top/pop3d" "$dir/pop3d"	# reachable for nobody
	run="setpriv --reuid=nobody --regid=nogroup --clear-groups"
else
	account=$(id -un)
	cp "$top/pop3d" "$dir/pop3d"
	run=
fi
sed -e "s|ACCOUNT|$account|" -e "s|MAILBOX|$dir/demo.mbox|" \
    "$top/demo/passwd.in" >"$dir/passwd"
chmod 644 "$dir/passwd"

# shellcheck disable=SC2086
INETD_READY=$dir/run/ready $run /usr/bin/python3 "$top/tools/inetd.py" "$port" "$dir/pop3d" -d \
    -f "$dir/passwd" -R "$dir/run" 2>"$dir/pop3d.log" &
server=$!
cleanup() {
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

i=0
until [ -e "$dir/run/ready" ]; do
	i=$((i + 1))
	[ "$i" -gt 50 ] && { echo "demo: the server did not start" >&2; cat "$dir/pop3d.log" >&2; exit 1; }
	sleep 0.1
done

echo "== A POP3 session with pop3d on 127.0.0.1:$port =="
/usr/bin/python3 "$top/demo/client.py" 127.0.0.1 "$port" || { cat "$dir/pop3d.log" >&2; exit 1; }
echo
echo "== What pop3d logged (it logs to syslog when not run with -d) =="
sed 's/^/  /' "$dir/pop3d.log"
echo
cat <<TXT
Connect yourself while this runs (user demo, password demo):
  curl pop3://demo:demo@127.0.0.1:$port/        # list
  curl pop3://demo:demo@127.0.0.1:$port/1       # read message 1
  python3 -c "import poplib; p = poplib.POP3('127.0.0.1', $port); p.user('demo'); p.pass_('demo'); print(p.stat()); p.quit()"
TXT
if [ -t 0 ]; then
	printf 'Press Enter to stop the demo. '
	read -r _
fi
