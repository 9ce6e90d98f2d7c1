/*
 * test_sandbox.c: the pre-login sandbox.  Each case runs in a forked
 * child that enters the sandbox; the parent reads the child's state in
 * /proc and its limits with prlimit(2), and judges it by how it ends: a
 * child whose body worked exits 0 (else with the number of the step that
 * failed), a child that made a forbidden system call dies of SIGSYS.
 * Runs as any user; the network namespace case needs root and is skipped
 * otherwise.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox.h"

/* What the parent learnt about the confined child, before it went on. */
struct seen {
	int		 seccomp;	/* "Seccomp:" of /proc/PID/status */
	int		 nnp;		/* "NoNewPrivs:" */
	struct rlimit	 nproc, fsize, nofile, core;
};

/* One test body, run in the child after sandbox_enter; 0 when it worked. */
typedef int (*body_fn)(void *);

/* The child's stderr: /dev/null (a device) or a scratch regular file. */
enum child_stderr {
	ERR_DEVNULL,
	ERR_FILE
};

static int
status_field(const char *status, const char *name)
{
	const char	*p;

	if ((p = strstr(status, name)) == NULL)
		return -1;
	return atoi(p + strlen(name));
}

static void
read_status(pid_t pid, struct seen *seen)
{
	char	 path[64], buf[4096];
	ssize_t	 n;
	int	 fd;

	(void)snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	assert_true((fd = open(path, O_RDONLY)) != -1);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	close(fd);
	seen->seccomp = status_field(buf, "\nSeccomp:\t");
	seen->nnp = status_field(buf, "\nNoNewPrivs:\t");
	assert_int_equal(prlimit(pid, RLIMIT_NPROC, NULL, &seen->nproc), 0);
	assert_int_equal(prlimit(pid, RLIMIT_FSIZE, NULL, &seen->fsize), 0);
	assert_int_equal(prlimit(pid, RLIMIT_NOFILE, NULL, &seen->nofile), 0);
	assert_int_equal(prlimit(pid, RLIMIT_CORE, NULL, &seen->core), 0);
}

/*
 * Forks a child that gives itself the stderr asked for, enters the
 * sandbox (with maxfd the highest descriptor it holds), tells the parent,
 * waits for the parent to look at it, then runs body.  Returns the wait
 * status; fills *seen when seen != NULL.
 */
static int
run_confined(body_fn body, void *arg, enum child_stderr err,
    struct seen *seen)
{
	char	 tmpl[] = "/tmp/test_sandbox.XXXXXX";
	int	 ready[2], go[2], fd, status;
	pid_t	 pid;
	char	 c = 0;

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	if (err == ERR_FILE) {
		assert_true((fd = mkstemp(tmpl)) != -1);
		assert_int_equal(unlink(tmpl), 0);
	} else
		assert_true((fd = open("/dev/null", O_WRONLY)) != -1);
	assert_true((pid = fork()) != -1);
	if (pid == 0) {
		/* No core files from the kills below. */
		(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		close(ready[0]);
		close(go[1]);
		if (dup2(fd, STDERR_FILENO) == -1)
			_exit(100);
		close(fd);
		if (sandbox_enter(ready[1] > go[0] ? ready[1] : go[0]) == -1)
			_exit(101);
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(102);
		_exit(body(arg));
	}
	close(fd);
	close(ready[1]);
	close(go[0]);
	/* The child is confined once it says so, and waits for us. */
	if (read(ready[0], &c, 1) == 1 && seen != NULL)
		read_status(pid, seen);
	if (write(go[1], &c, 1) != 1)
		fail_msg("the child went away before it was looked at");
	close(ready[0]);
	close(go[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void
assert_exit_ok(int status)
{
	if (WIFSIGNALED(status))
		fail_msg("child killed by signal %d", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
assert_killed_by_filter(int status)
{
	if (WIFEXITED(status))
		fail_msg("child exited %d instead of dying of SIGSYS",
		    WEXITSTATUS(status));
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
}

static int
body_nothing(void *arg)
{
	(void)arg;
	return 0;
}

/* Seccomp mode 2 (filter), no_new_privs, and the four limits. */
static void
test_status_and_limits(void **state)
{
	struct seen	 seen;

	(void)state;
	memset(&seen, 0, sizeof(seen));
	assert_exit_ok(run_confined(body_nothing, NULL, ERR_DEVNULL, &seen));
	assert_int_equal(seen.seccomp, 2);
	assert_int_equal(seen.nnp, 1);
	assert_int_equal(seen.nproc.rlim_cur, 0);
	assert_int_equal(seen.nproc.rlim_max, 0);
	assert_int_equal(seen.fsize.rlim_cur, 0);
	assert_int_equal(seen.fsize.rlim_max, 0);
	assert_int_equal(seen.core.rlim_cur, 0);
	assert_int_equal(seen.core.rlim_max, 0);
	/* The child holds 0, 1, 2 and two pipe ends: at least fd 4. */
	assert_true(seen.nofile.rlim_cur >= 5);
	assert_true(seen.nofile.rlim_cur < 64);
	assert_int_equal(seen.nofile.rlim_cur, seen.nofile.rlim_max);
}

static int
body_log_line(void *arg)
{
	static const char line[] = "pop3d: a log line\n";

	(void)arg;
	return write(STDERR_FILENO, line, sizeof(line) - 1) ==
	    (ssize_t)sizeof(line) - 1 ? 0 : 1;
}

/* pop3d -d logging to a file: the file can still take lines. */
static void
test_stderr_file_keeps_growing(void **state)
{
	struct seen	 seen;

	(void)state;
	memset(&seen, 0, sizeof(seen));
	assert_exit_ok(run_confined(body_log_line, NULL, ERR_FILE, &seen));
	assert_int_equal(seen.seccomp, 2);
	assert_true(seen.fsize.rlim_cur == RLIM_INFINITY ||
	    seen.fsize.rlim_cur > 0);
}

/* What the dialogue does: all of it works. */
static int
body_allowed(void *arg)
{
	struct pollfd	 pfd;
	struct timespec	 ts;
	char		*big;

	(void)arg;
	if (write(STDERR_FILENO, "x", 1) != 1)
		return 1;
	pfd.fd = STDERR_FILENO;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, 0) != 1)
		return 2;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 3;
	ts.tv_sec = 0;
	ts.tv_nsec = 1000;
	if (nanosleep(&ts, NULL) == -1)
		return 4;
	if (getpid() <= 0)
		return 5;
	/* Large enough for malloc to mmap it, then to mremap it. */
	if ((big = malloc(1 << 20)) == NULL)
		return 6;
	memset(big, 'a', 1 << 20);
	if ((big = realloc(big, 4 << 20)) == NULL)
		return 7;
	free(big);
	if (mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
		return 8;
	/* syslog(3) trying to reconnect: refused, not killed. */
	errno = 0;
	if (socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) != -1 ||
	    errno != EACCES)
		return 9;
	return 0;
}

static void
test_allowed_calls(void **state)
{
	(void)state;
	assert_exit_ok(run_confined(body_allowed, NULL, ERR_DEVNULL, NULL));
}

/* Reads and writes on descriptors made before the sandbox. */
struct pair {
	int	 sv[2];
};

static int
body_socketpair(void *arg)
{
	struct pair	*pr = arg;
	struct pollfd	 pfd;
	char		 buf[16];

	if (send(pr->sv[0], "ping", 4, MSG_NOSIGNAL) != 4)
		return 1;
	pfd.fd = pr->sv[1];
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 5000) != 1)
		return 2;
	if (recv(pr->sv[1], buf, sizeof(buf), 0) != 4 ||
	    memcmp(buf, "ping", 4) != 0)
		return 3;
	if (write(pr->sv[1], "pong", 4) != 4 ||
	    read(pr->sv[0], buf, sizeof(buf)) != 4 ||
	    memcmp(buf, "pong", 4) != 0)
		return 4;
	if (close(pr->sv[1]) == -1)
		return 5;
	return 0;
}

static void
test_existing_descriptors(void **state)
{
	struct pair	 pr;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pr.sv), 0);
	assert_exit_ok(run_confined(body_socketpair, &pr, ERR_DEVNULL, NULL));
	close(pr.sv[0]);
	close(pr.sv[1]);
}

/* syslog(3) with no connection tries a new socket: the line is lost. */
static int
body_syslog(void *arg)
{
	(void)arg;
	syslog(LOG_DEBUG, "test_sandbox: this line goes nowhere");
	return 0;
}

static void
test_syslog_without_daemon(void **state)
{
	(void)state;
	/* The timezone is read by sandbox_prepare in pop3d; here, by us. */
	tzset();
	closelog();
	assert_exit_ok(run_confined(body_syslog, NULL, ERR_DEVNULL, NULL));
}

/* Forbidden calls, each in a child of its own. */
static int
body_openat(void *arg)
{
	(void)arg;
	return open("/", O_RDONLY | O_DIRECTORY) == -1 && errno == EACCES ?
	    50 : 51;
}

static int
body_socket_inet(void *arg)
{
	(void)arg;
	return socket(AF_INET, SOCK_STREAM, 0) == -1 ? 50 : 51;
}

static int
body_socket_unix_stream(void *arg)
{
	(void)arg;
	return socket(AF_UNIX, SOCK_STREAM, 0) == -1 ? 50 : 51;
}

static int
body_fork(void *arg)
{
	pid_t	 pid;

	(void)arg;
	if ((pid = fork()) == 0)
		_exit(0);
	return pid == -1 ? 50 : 51;
}

static int
body_execve(void *arg)
{
	char	*argv[] = { "/bin/true", NULL };
	char	*envp[] = { NULL };

	(void)arg;
	(void)execve(argv[0], argv, envp);
	return 50;
}

static int
body_mprotect_exec(void *arg)
{
	void	*p;

	(void)arg;
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 49;
	return mprotect(p, 4096, PROT_READ | PROT_EXEC) == -1 ? 50 : 51;
}

static int
body_mmap_exec(void *arg)
{
	(void)arg;
	return mmap(NULL, 4096, PROT_READ | PROT_EXEC,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED ? 50 : 51;
}

static int
body_ptrace(void *arg)
{
	(void)arg;
	return ptrace(PTRACE_TRACEME, 0, NULL, NULL) == -1 ? 50 : 51;
}

static int
body_kill_parent(void *arg)
{
	(void)arg;
	return kill(getppid(), 0) == -1 ? 50 : 51;
}

static int
body_dup(void *arg)
{
	(void)arg;
	return dup(STDERR_FILENO) == -1 ? 50 : 51;
}

static int
body_setuid(void *arg)
{
	(void)arg;
	return syscall(SYS_setuid, 0) == -1 ? 50 : 51;
}

static int
body_sendmsg(void *arg)
{
	struct msghdr	 mh;

	(void)arg;
	memset(&mh, 0, sizeof(mh));
	return sendmsg(STDERR_FILENO, &mh, 0) == -1 ? 50 : 51;
}

static int
body_unshare(void *arg)
{
	(void)arg;
	return syscall(SYS_unshare, 0) == -1 ? 50 : 51;
}

/*
 * Under make SANITIZE=1 the sanitizer's report path may open files:
 * those calls fail with EACCES instead (sandbox.c), which body_openat
 * reports as exit status 50.
 */
#ifdef __SANITIZE_ADDRESS__
#define SOFT_UNDER_ASAN	1
#else
#define SOFT_UNDER_ASAN	0
#endif

static const struct forbidden {
	const char	*what;
	body_fn		 body;
	int		 soft;		/* refused, not killed, under ASan */
} forbidden[] = {
	{ "openat /", body_openat, SOFT_UNDER_ASAN },
	{ "socket(AF_INET)", body_socket_inet, 0 },
	{ "socket(AF_UNIX, SOCK_STREAM)", body_socket_unix_stream, 0 },
	{ "fork", body_fork, 0 },
	{ "execve", body_execve, 0 },
	{ "mprotect PROT_EXEC", body_mprotect_exec, 0 },
	{ "mmap PROT_EXEC", body_mmap_exec, 0 },
	{ "ptrace", body_ptrace, 0 },
	{ "kill of the parent", body_kill_parent, 0 },
	{ "dup", body_dup, 0 },
	{ "setuid", body_setuid, 0 },
	{ "sendmsg", body_sendmsg, 0 },
	{ "unshare", body_unshare, 0 },
};

static void
test_forbidden_calls_kill(void **state)
{
	size_t	 i;
	int	 status;

	(void)state;
	for (i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
		status = run_confined(forbidden[i].body, NULL, ERR_DEVNULL,
		    NULL);
		if (forbidden[i].soft) {
			assert_true(WIFEXITED(status));
			assert_int_equal(WEXITSTATUS(status), 50);
			continue;
		}
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
			fail_msg("%s: not killed by SIGSYS (status %#x)",
			    forbidden[i].what, status);
		assert_killed_by_filter(status);
	}
}

static void
test_bad_maxfd(void **state)
{
	(void)state;
	errno = 0;
	assert_int_equal(sandbox_enter(-1), -1);
	assert_int_equal(errno, EINVAL);
}

static void
test_allows_table(void **state)
{
	(void)state;
	assert_true(sandbox_allows("read"));
	assert_true(sandbox_allows("poll"));
	assert_true(sandbox_allows("mmap"));
	assert_false(sandbox_allows("open"));
	assert_false(sandbox_allows("openat"));
	assert_false(sandbox_allows("socket"));
	assert_false(sandbox_allows("clone"));
	assert_false(sandbox_allows("execve"));
	assert_false(sandbox_allows("sendmsg"));
	assert_false(sandbox_allows(""));
}

/*
 * As anyone: sandbox_prepare succeeds whether or not it gets a network
 * namespace.  As root where the kernel allows it: the child has a
 * namespace of its own, with no route to loopback, and a socketpair made
 * before still works.
 */
static void
test_prepare(void **state)
{
	char	 before[64], after[64], c;
	ssize_t	 n;
	pid_t	 pid;
	int	 sv[2], status, probe;

	(void)state;
	n = readlink("/proc/self/ns/net", before, sizeof(before) - 1);
	assert_true(n > 0);
	before[n] = '\0';
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_true((pid = fork()) != -1);
	if (pid == 0) {
		struct sockaddr_in	 sin;
		int			 fd, own;

		close(sv[0]);
		if (sandbox_prepare() == -1)
			_exit(10);
		n = readlink("/proc/self/ns/net", after, sizeof(after) - 1);
		if (n <= 0)
			_exit(11);
		after[n] = '\0';
		own = strcmp(before, after) != 0;
		if (own) {
			memset(&sin, 0, sizeof(sin));
			sin.sin_family = AF_INET;
			sin.sin_port = htons(9);
			sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) == -1)
				_exit(12);
			if (connect(fd, (struct sockaddr *)&sin,
			    sizeof(sin)) != -1 || errno != ENETUNREACH)
				_exit(13);
			close(fd);
		}
		c = own ? 'n' : 'h';
		_exit(write(sv[1], &c, 1) == 1 ? 0 : 14);
	}
	close(sv[1]);
	assert_int_equal(read(sv[0], &c, 1), 1);
	close(sv[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_exit_ok(status);
	if (geteuid() != 0) {
		assert_int_equal(c, 'h');
		print_message("not root: no network namespace to test\n");
		skip();
	}
	/* Root: a namespace unless this kernel or container refuses one. */
	if ((pid = fork()) == 0)
		_exit(unshare(CLONE_NEWNET) == 0 ? 0 : 1);
	assert_int_equal(waitpid(pid, &probe, 0), pid);
	if (!WIFEXITED(probe) || WEXITSTATUS(probe) != 0) {
		print_message("unshare(CLONE_NEWNET) refused here; skipped\n");
		skip();
	}
	assert_int_equal(c, 'n');
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_and_limits),
		cmocka_unit_test(test_stderr_file_keeps_growing),
		cmocka_unit_test(test_allowed_calls),
		cmocka_unit_test(test_existing_descriptors),
		cmocka_unit_test(test_syslog_without_daemon),
		cmocka_unit_test(test_forbidden_calls_kill),
		cmocka_unit_test(test_bad_maxfd),
		cmocka_unit_test(test_allows_table),
		cmocka_unit_test(test_prepare),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
