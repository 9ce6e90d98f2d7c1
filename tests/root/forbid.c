/*
 * forbid.c: an LD_PRELOAD shim for tests/root/test_root_sandbox.py.  When
 * a read(2) by pop3d returns a line "XSYS NAME", the process makes the
 * system call NAME at once (getppid, openat or socket: none of them is
 * one the AUTHORIZATION dialogue needs), from inside whatever process
 * read it, the pre-login process when the client sends it before a
 * login.  Under the seccomp filter the call never returns; without it,
 * the shim says so on stderr and the read goes on as usual.  Runs with
 * the privileges of the process it is loaded into; built by the test.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static ssize_t	(*real_read)(int, void *, size_t);
static ssize_t	(*real_read_chk)(int, void *, size_t, size_t);

/*
 * Resolved at the first call or before main, whichever comes first (a
 * library's constructor may read before ours runs): in any case before
 * the sandbox, so that nothing needs the loader under the filter.
 */
static void
resolve(void)
{
	if (real_read == NULL)
		real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT,
		    "read");
	if (real_read_chk == NULL)
		real_read_chk = (ssize_t (*)(int, void *, size_t, size_t))
		    dlsym(RTLD_NEXT, "__read_chk");
}

static void __attribute__((constructor))
forbid_init(void)
{
	resolve();
}

static void
say(const char *s)
{
	long	 r = syscall(SYS_write, 2, s, strlen(s));

	(void)r;
}

static void
maybe_forbidden(const void *buf, ssize_t n)
{
	const char	*p;

	if (n <= 0 || (p = memmem(buf, (size_t)n, "XSYS ", 5)) == NULL)
		return;
	p += 5;
	if (strncmp(p, "getppid", 7) == 0)
		(void)syscall(SYS_getppid);
	else if (strncmp(p, "openat", 6) == 0)
		(void)syscall(SYS_openat, AT_FDCWD, "/", O_RDONLY);
	else if (strncmp(p, "socket", 6) == 0)
		(void)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
	else {
		say("forbid: unknown system call asked for\n");
		return;
	}
	say("forbid: the forbidden system call returned\n");
}

ssize_t
read(int fd, void *buf, size_t len)
{
	ssize_t	 n;

	resolve();
	n = real_read(fd, buf, len);

	maybe_forbidden(buf, n);
	return n;
}

ssize_t
__read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	ssize_t	 n;

	resolve();
	n = real_read_chk(fd, buf, len, buflen);

	maybe_forbidden(buf, n);
	return n;
}
