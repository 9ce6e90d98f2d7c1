#!/bin/sh
# Installs the Debian packages pop3d needs for "build", "demo" or "test",
# when they are missing.  Needs root only when something is missing.
set -eu

build="gcc make pkg-config libc6-dev libpam0g-dev libcrypt-dev libmd-dev liblockfile-dev libseccomp-dev"
demo="$build python3 util-linux curl"
test="$demo libcmocka-dev libpam-wrapper libnss-wrapper libuid-wrapper \
python3-pytest liblockfile-bin procps systemd xinetd valgrind clang libclang-rt-14-dev procmail \
stunnel4 openssl fetchmail mpop getmail6 man-db groff-base fail2ban rsyslog \
build-essential debhelper dpkg-dev fakeroot lintian blhc adduser \
glusterfs-server glusterfs-client haproxy"

case "${1:-build}" in
build)	want=$build ;;
demo)	want=$demo ;;
test)	want=$test ;;
*)	echo "usage: $0 build|demo|test" >&2; exit 2 ;;
esac

missing=
for p in $want; do
	s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$s" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "pop3d: missing Debian packages:$missing" >&2
	echo "pop3d: run as root, or: apt-get install$missing" >&2
	exit 1
fi
echo "pop3d: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
