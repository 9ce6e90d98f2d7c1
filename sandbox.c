/*
 * sandbox.c: confines the pre-login process (see sandbox.h).  The first
 * half runs as root before the chroot, the second as the unprivileged
 * pre-login account after it.  The allowlist below is what a traced
 * AUTHORIZATION dialogue does after the drop (strace -f over the e2e
 * suites, under -d and under syslog), and no more.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND	0
#endif

enum sandbox_rule {
	SB_ALLOW,		/* any arguments */
	SB_NOEXEC		/* only if argument 2 (prot) lacks PROT_EXEC */
};

struct sandbox_call {
	const char		*name;
	enum sandbox_rule	 rule;
};

/*
 * Every system call the pre-login process may make once confined.  Names
 * the architecture lacks (poll on arm64, time on some) are skipped.
 */
static const struct sandbox_call sandbox_calls[] = {
	/* The client on fds 0 and 1, the monitor's socket, -d's stderr. */
	{ "read",		SB_ALLOW },
	{ "readv",		SB_ALLOW },
	{ "write",		SB_ALLOW },
	{ "writev",		SB_ALLOW },
	/* send(2)/recv(2): io.c on a socket, privsep.c, syslog(3). */
	{ "sendto",		SB_ALLOW },
	{ "recvfrom",		SB_ALLOW },
	/* io.c's deadline; glibc may spell poll() as ppoll. */
	{ "poll",		SB_ALLOW },
	{ "ppoll",		SB_ALLOW },
	/* syslog(3) closes its socket when the daemon went away. */
	{ "close",		SB_ALLOW },
	{ "exit",		SB_ALLOW },
	{ "exit_group",		SB_ALLOW },
	/* syslog(3) with LOG_PID. */
	{ "getpid",		SB_ALLOW },
	/* Clocks: the vDSO's fallbacks, and sleeps. */
	{ "clock_gettime",	SB_ALLOW },
	{ "gettimeofday",	SB_ALLOW },
	{ "time",		SB_ALLOW },
	{ "nanosleep",		SB_ALLOW },
	{ "clock_nanosleep",	SB_ALLOW },
	/* malloc(3); never a page that can be executed. */
	{ "brk",		SB_ALLOW },
	{ "mmap",		SB_NOEXEC },
	{ "mprotect",		SB_NOEXEC },
	{ "munmap",		SB_ALLOW },
	{ "mremap",		SB_ALLOW },
	{ "madvise",		SB_ALLOW },
	/* glibc's locks (stdio, syslog) when contended; signal returns. */
	{ "futex",		SB_ALLOW },
	{ "rt_sigreturn",	SB_ALLOW },
	{ "restart_syscall",	SB_ALLOW },
#ifdef __SANITIZE_ADDRESS__
	/*
	 * make SANITIZE=1: the ASan runtime queries its signal stack
	 * (sigaltstack) at _exit, names the reporting thread (gettid) and
	 * masks signals in its deadly-signal and report paths
	 * (rt_sigprocmask).  None reaches outside the process.
	 */
	{ "sigaltstack",	SB_ALLOW },
	{ "gettid",		SB_ALLOW },
	{ "rt_sigprocmask",	SB_ALLOW },
#endif
};

#ifdef __SANITIZE_ADDRESS__
/*
 * What an ASan or UBSan report reads on its way (the executable's name,
 * /proc/self/cmdline and environ, isatty(2) for colours, a pipe and a
 * PATH search for llvm-symbolizer): refused with an error instead of
 * killed, so that the report is printed, unsymbolised.  Mappings are
 * cached beforehand by __sanitizer_sandbox_on_notify().  The leak check
 * at exit(3) needs clone and ptrace and cannot work here; the pre-login
 * process ends with _exit(2), which skips it.
 */
static const char *const sandbox_refused_asan[] = {
	"open", "openat", "readlink", "newfstatat", "stat", "ioctl", "pipe",
	"pipe2"
};
#endif

/*
 * The pre-login account cannot write files, so RLIMIT_FSIZE 0 costs it
 * nothing, with one exception: pop3d -d logs to stderr, and when stderr
 * is a regular file (a test's log, a redirect by hand) a limit of 0 would
 * kill the process at its first line (SIGXFSZ).  The filter still
 * forbids opening anything, so that inherited log is the only file it
 * could grow.
 */
static int
stderr_is_file(void)
{
	struct stat	 sb;

	return fstat(STDERR_FILENO, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int
set_limit(int resource, rlim_t value)
{
	struct rlimit	 rl;

	rl.rlim_cur = rl.rlim_max = value;
	return setrlimit(resource, &rl);
}

/*
 * Valgrind emulates RLIMIT_NOFILE and lets a program lower only the soft
 * limit (EPERM otherwise).  The soft limit alone holds just as well here:
 * the filter forbids setrlimit and prlimit64, so it can never be raised.
 */
static int
set_nofile(rlim_t value)
{
	struct rlimit	 rl;

	if (set_limit(RLIMIT_NOFILE, value) == 0)
		return 0;
	if (errno != EPERM || getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -1;
	rl.rlim_cur = value;
	return setrlimit(RLIMIT_NOFILE, &rl);
}

/* libseccomp returns -errno; keep errno as the header promises. */
static int
scmp_fail(scmp_filter_ctx ctx, int rc)
{
	seccomp_release(ctx);
	errno = rc < 0 ? -rc : EINVAL;
	return -1;
}

/*
 * Under valgrind (only when built with its header, and only when the
 * process really runs on valgrind's synthetic CPU, which no client can
 * bring about): valgrind makes its own system calls from inside the
 * process.  It masks signals around every call it runs for the program
 * (rt_sigprocmask), names threads (gettid) and maps the code it
 * translates executable; at exit it removes its vgdb FIFOs (unlink:
 * refused, it carries on).  Without these, valgrind dies of SIGSYS at
 * the first system call after the filter, and the suite's memcheck test
 * with it.  Valgrind 3.19 does not know seccomp(2) and warns of it in its
 * log: libseccomp is told to use prctl(2) instead (API level 1, which
 * also means SCMP_ACT_KILL).  Valgrind's log file is a regular file, so
 * RLIMIT_FSIZE stays as it is.
 */
static const char *const sandbox_valgrind[] = {
	"rt_sigprocmask", "gettid"
};

static int
add_valgrind(scmp_filter_ctx ctx)
{
	size_t	 i;
	int	 nr, rc;

	log_debug("pre-login process under valgrind: the filter lets "
	    "valgrind's own system calls through");
	for (i = 0; i < sizeof(sandbox_valgrind) / sizeof(sandbox_valgrind[0]);
	    i++) {
		nr = seccomp_syscall_resolve_name(sandbox_valgrind[i]);
		if (nr == __NR_SCMP_ERROR || nr < 0)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) < 0)
			return rc;
	}
	nr = seccomp_syscall_resolve_name("unlink");
	if (nr == __NR_SCMP_ERROR || nr < 0)
		return 0;
	return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr, 0);
}

static int
load_filter(void)
{
	scmp_filter_ctx	 ctx;
	uint32_t	 kill = SCMP_ACT_KILL_PROCESS;
	size_t		 i;
	int		 nr, rc;

	if (RUNNING_ON_VALGRIND && (rc = seccomp_api_set(1)) < 0) {
		errno = -rc;
		return -1;
	}
	/* Kernels before 4.14 kill only the thread; one thread here. */
	if ((ctx = seccomp_init(kill)) == NULL) {
		kill = SCMP_ACT_KILL;
		if ((ctx = seccomp_init(kill)) == NULL) {
			errno = ENOSYS;
			return -1;
		}
	}
	/* A foreign ABI (i386 int 0x80, x32) has other numbers: kill it. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, kill)) < 0)
		return scmp_fail(ctx, rc);
	for (i = 0; i < sizeof(sandbox_calls) / sizeof(sandbox_calls[0]);
	    i++) {
		nr = seccomp_syscall_resolve_name(sandbox_calls[i].name);
		if (nr == __NR_SCMP_ERROR || nr < 0)
			continue;
		if (sandbox_calls[i].rule == SB_NOEXEC && !RUNNING_ON_VALGRIND)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
			    SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
		else
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (rc < 0)
			return scmp_fail(ctx, rc);
	}
	/*
	 * syslog(3) opens a new socket when its connection to the daemon
	 * is gone (not there at openlog, or restarted since): that one
	 * attempt fails with EACCES, so the line is lost, not the session.
	 * Any other socket kills.
	 */
	if ((nr = seccomp_syscall_resolve_name("socket")) != __NR_SCMP_ERROR &&
	    nr >= 0) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr, 2,
		    SCMP_A0(SCMP_CMP_EQ, AF_UNIX, 0),
		    SCMP_A1(SCMP_CMP_EQ, SOCK_DGRAM | SOCK_CLOEXEC, 0));
		if (rc == 0)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr,
			    2, SCMP_A0(SCMP_CMP_EQ, AF_UNIX, 0), SCMP_A1(
			    SCMP_CMP_EQ, SOCK_STREAM | SOCK_CLOEXEC, 0));
		if (rc < 0)
			return scmp_fail(ctx, rc);
	}
#ifdef __SANITIZE_ADDRESS__
	for (i = 0; i < sizeof(sandbox_refused_asan) /
	    sizeof(sandbox_refused_asan[0]); i++) {
		nr = seccomp_syscall_resolve_name(sandbox_refused_asan[i]);
		if (nr == __NR_SCMP_ERROR || nr < 0)
			continue;
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(strcmp(
		    sandbox_refused_asan[i], "ioctl") == 0 ? ENOTTY : EACCES),
		    nr, 0);
		if (rc < 0)
			return scmp_fail(ctx, rc);
	}
	__sanitizer_sandbox_on_notify(NULL);
#endif
	if (RUNNING_ON_VALGRIND && (rc = add_valgrind(ctx)) < 0)
		return scmp_fail(ctx, rc);
	rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}

int
sandbox_prepare(void)
{
	/*
	 * syslog(3) stamps each line in local time; glibc reads the zone
	 * file on first use, which the chroot and the filter would forbid.
	 */
	tzset();
	/*
	 * An empty network namespace: no interface but a down loopback, no
	 * abstract Unix sockets of the host's.  The client's socket and the
	 * monitor's stay usable: descriptors keep the namespace they were
	 * made in.
	 */
	if (unshare(CLONE_NEWNET) == -1) {
		if (errno != EPERM && errno != EINVAL && errno != ENOSPC &&
		    errno != EUSERS)
			return -1;
		log_debug("pre-login process keeps the host's network "
		    "namespace (unshare: %s)", strerror(errno));
	}
	return 0;
}

int
sandbox_enter(int maxfd)
{
	if (maxfd < 0) {
		errno = EINVAL;
		return -1;
	}
	/*
	 * poll() wants nfds no higher than RLIMIT_NOFILE, and descriptors
	 * already open above the limit stay usable, so maxfd + 1 takes
	 * nothing from the dialogue; it bounds what a file descriptor
	 * passed over the monitor's socket could add.
	 */
	if (set_limit(RLIMIT_CORE, 0) == -1 ||
	    set_limit(RLIMIT_NPROC, 0) == -1 ||
	    set_nofile((rlim_t)maxfd + 1) == -1)
		return -1;
	if (!stderr_is_file() && !RUNNING_ON_VALGRIND &&
	    set_limit(RLIMIT_FSIZE, 0) == -1)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return -1;
	return load_filter();
}

int
sandbox_allows(const char *name)
{
	size_t	 i;

	for (i = 0; i < sizeof(sandbox_calls) / sizeof(sandbox_calls[0]);
	    i++)
		if (strcmp(sandbox_calls[i].name, name) == 0)
			return 1;
	return 0;
}
