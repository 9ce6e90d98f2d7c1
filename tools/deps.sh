#!/bin/sh
# Installs the Debian packages pop3d needs for "build", "demo" or "test",
# when they are missing.  Needs root only when something is missing.
set -eu

# liblockfile-bin is a runtime need: its setgid dotlockfile makes the
# dotlocks in a spool the session cannot write.
build="gcc make pkg-config libc6-dev libpam0g-dev libcrypt-dev libmd-dev liblockfile-dev \
libseccomp-dev liblockfile-bin"
demo="$build python3 util-linux curl"
test="$demo libcmocka-dev libpam-wrapper libnss-wrapper libuid-wrapper \
python3-pytest procps systemd xinetd valgrind clang procmail \
stunnel4 openssl fetchmail mpop getmail6 man-db groff-base fail2ban rsyslog \
build-essential debhelper dpkg-dev fakeroot lintian blhc adduser \
glusterfs-server glusterfs-client haproxy dovecot-pop3d xfsprogs"

case "${1:-build}" in
build)	want=$build ;;
demo)	want=$demo ;;
test)	want=$test ;;
*)	echo "usage: $0 build|demo|test" >&2; exit 2 ;;
esac

# libFuzzer's runtime is the one of the clang that is installed.
fuzzer_runtime() {
	command -v clang >/dev/null 2>&1 || return 0
	dir=$(clang --print-runtime-dir 2>/dev/null) || return 0
	ls "$dir"/libclang_rt.fuzzer-*.a >/dev/null 2>&1 && return 0
	echo "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
}

installed() {
	case "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" in
	*" installed") return 0 ;;
	esac
	return 1
}

install() {
	if [ "$(id -u)" != 0 ]; then
		echo "pop3d: missing Debian packages: $*" >&2
		echo "pop3d: run as root, or: apt-get install $*" >&2
		exit 1
	fi
	echo "pop3d: installing $*" >&2
	export DEBIAN_FRONTEND=noninteractive
	# The tests start the daemons they need (glusterd, rsyslogd,
	# fail2ban-server, xinetd...) on loopback and stop them: installing
	# must not start the packages' own, which would hold their ports.
	policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
	fi
	rc=0
	apt-get update -q >/dev/null &&
	    apt-get install -y -q --no-install-recommends "$@" >/dev/null || rc=$?
	[ -z "$policy" ] || rm -f "$policy"
	return $rc
}

missing=
for p in $want; do
	installed "$p" || missing="$missing $p"
done
# shellcheck disable=SC2086
[ -z "$missing" ] || install $missing
if [ "${1:-build}" = test ]; then
	rt=$(fuzzer_runtime)
	[ -z "$rt" ] || install "$rt"
fi
exit 0
