/*
 * monitor.c: the root side of a login (see monitor.h).  Runs as root.
 * Everything it gets from the pre-login process arrives as a checked
 * record (privsep.c); every check runs in a checker process whose
 * standard descriptors are /dev/null and that holds no other descriptor
 * but its answer's, so that nothing PAM loads can reach the client.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "io.h"
#include "log.h"
#include "monitor.h"
#include "peer.h"
#include "pop3d.h"
#include "prelogin.h"
#include "privsep.h"
#include "session.h"

#define DEFAULT_PRELOGIN_USER	"pop3d"

/* What the checks of one login share. */
struct monitor {
	const struct pop3d_config *cf;
	const struct peer	*peer;
};

/* The last checker process, to be reaped at the end. */
static pid_t	 checker = -1;

void
monitor_reap(void)
{
	if (checker != -1)
		while (waitpid(checker, NULL, 0) == -1 && errno == EINTR)
			;
	checker = -1;
}

/*
 * The checker's descriptors: 0, 1 and 2 on /dev/null (2 stays when pop3d
 * logs to a stderr that is not the client's socket), fd, and nothing
 * else.  Returns 0 or -1.
 */
static int
checker_fds(const struct pop3d_config *cf, int fd)
{
	struct stat	 in, err;
	int		 null, keep_err;

	keep_err = cf->log_stderr && fstat(STDIN_FILENO, &in) == 0 &&
	    fstat(STDERR_FILENO, &err) == 0 &&
	    (in.st_dev != err.st_dev || in.st_ino != err.st_ino);
	if ((null = open("/dev/null", O_RDWR | O_CLOEXEC)) == -1)
		return -1;
	if (dup2(null, STDIN_FILENO) == -1 || dup2(null, STDOUT_FILENO) == -1 ||
	    (!keep_err && dup2(null, STDERR_FILENO) == -1))
		return -1;
	if (fd > STDERR_FILENO + 1 &&
	    close_range(STDERR_FILENO + 1, (unsigned int)fd - 1, 0) == -1)
		return -1;
	closefrom(fd + 1);
	return 0;
}

/* The checker process: one check, one record back, exit. */
static __attribute__((noreturn)) void
checker_run(const struct monitor *mon, int fd, struct auth_request *req)
{
	struct auth_user u;
	enum auth_status st;

	if (checker_fds(mon->cf, fd) == -1) {
		explicit_bzero(req, sizeof(*req));
		_exit(1);
	}
	st = auth_login(&mon->cf->auth, 1, req, &u);
	explicit_bzero(req, sizeof(*req));
	_exit(ps_send_checked(fd, st, &u) == 0 ? 0 : 1);
}

/*
 * The monitor's check (a ps_check_fn): forks the checker, waits for its
 * record at most the session timeout, logs the outcome and makes a
 * failure cost at least the failure delay.
 */
static enum auth_status
check_forked(void *arg, struct auth_request *req, struct auth_user *user_r)
{
	const struct monitor *mon = arg;
	struct ps_msg	*res;
	struct timespec	 start;
	struct pollfd	 pfd;
	char		 name[AUTH_NAME_MAX];
	enum auth_status st = AUTH_TEMPFAIL;
	pid_t		 pid;
	int		 sv[2], n, r = -1;

	monitor_reap();
	(void)clock_gettime(CLOCK_MONOTONIC, &start);
	(void)snprintf(name, sizeof(name), "%s", req->user);
	if ((res = calloc(1, sizeof(*res))) == NULL ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		log_warn("checker");
		explicit_bzero(req, sizeof(*req));
		free(res);
		goto done;
	}
	if ((pid = fork()) == -1) {
		log_warn("fork");
		explicit_bzero(req, sizeof(*req));
		close(sv[0]);
		close(sv[1]);
		free(res);
		goto done;
	}
	if (pid == 0) {
		close(sv[0]);
		checker_run(mon, sv[1], req);
	}
	explicit_bzero(req, sizeof(*req));
	close(sv[1]);
	/* A PAM module that hangs must not hold the connection forever. */
	pfd.fd = sv[0];
	pfd.events = POLLIN;
	while ((n = poll(&pfd, 1, mon->cf->timeout * 1000)) == -1 &&
	    errno == EINTR)
		;
	if (n == 1)
		r = ps_recv(sv[0], res);
	else
		log_warnx("the authentication process took longer than %d s",
		    mon->cf->timeout);
	close(sv[0]);
	/*
	 * With its record in, the checker has nothing left to do but unmap
	 * itself: it is reaped at the end of the session rather than waited
	 * for on the login's path.  Anything less: it is stopped.
	 */
	if (r == 1 && res->type == PS_CHECKED) {
		checker = pid;
		st = res->status;
		if (st == AUTH_OK)
			*user_r = res->user;
		auth_log_result(st, &res->user, name, mon->peer->name);
	} else {
		(void)kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
			;
		log_warnx("the authentication process failed");
	}
	explicit_bzero(res, sizeof(*res));
	free(res);
done:
	explicit_bzero(name, sizeof(name));
	if (st != AUTH_OK)
		auth_fail_delay(&start, mon->cf->fail_delay_ms);
	return st;
}

int
monitor_chroot_check(const char *dir, const char **why_r)
{
	struct stat	 sb;
	struct dirent	*de;
	DIR		*d;
	int		 entries = 0;

	*why_r = NULL;
	if (lstat(dir, &sb) == -1)
		return -1;
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != 0 || (sb.st_mode & 022) != 0) {
		*why_r = "not a directory of root's closed to others";
		return -1;
	}
	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			entries++;
	closedir(d);
	if (entries > 0) {
		*why_r = "the pre-login chroot must be empty";
		return -1;
	}
	return 0;
}

/* The chroot of the pre-login process: created if missing, then checked. */
static int
chroot_ready(const char *dir)
{
	const char	*why;

	if (mkdir(dir, 0755) == 0)
		(void)chmod(dir, 0755);		/* whatever the umask */
	else if (errno != EEXIST) {
		log_warn("mkdir %s", dir);
		return -1;
	}
	if (monitor_chroot_check(dir, &why) == -1) {
		if (why != NULL)
			log_warnx("%s: %s", dir, why);
		else
			log_warn("%s", dir);
		return -1;
	}
	return 0;
}

const struct passwd *
monitor_prelogin_pw(const char *user, int *fallback_r)
{
	const struct passwd	*pw;

	*fallback_r = 0;
	if ((pw = getpwnam(user)) != NULL && pw->pw_uid != 0)
		return pw;
	/* Only the default account falls back: -u names what it means. */
	if (strcmp(user, DEFAULT_PRELOGIN_USER) != 0 ||
	    (pw = getpwnam("nobody")) == NULL || pw->pw_uid == 0)
		return NULL;
	*fallback_r = 1;
	return pw;
}

/* The unprivileged account of the pre-login process; 0 or -1. */
static int
prelogin_account(const struct pop3d_config *cf, struct prelogin_args *pa)
{
	const struct passwd	*pw;
	int			 fallback;

	if ((pw = monitor_prelogin_pw(cf->prelogin_user, &fallback)) == NULL) {
		log_warnx("no unprivileged account \"%s\" for the "
		    "pre-login process", cf->prelogin_user);
		return -1;
	}
	if (fallback)
		log_notice("no account \"%s\" (make install creates it); the "
		    "pre-login process runs as nobody", cf->prelogin_user);
	pa->uid = pw->pw_uid;
	pa->gid = pw->pw_gid;
	return 0;
}

/*
 * Waits for the pre-login process to exit, then ends its whole process
 * group: nothing it started may keep the connection.  The group is
 * killed while the exited leader still holds its id, so the id cannot
 * have been reused.  Returns its wait status.
 */
static int
reap_prelogin(pid_t pid)
{
	siginfo_t	 si;
	int		 status = 0;

	memset(&si, 0, sizeof(si));
	while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) == -1 &&
	    errno == EINTR)
		;
	(void)kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	return status;
}

int
monitor_login(const struct pop3d_config *cf, const struct peer *peer,
    struct io *io, const char *banner, int cleartext_ok,
    struct auth_user *user_r, struct ps_msg *hand_r, int *exit_r)
{
	static const char crashed[] = "-ERR [SYS/TEMP] Internal error, "
	    "closing\r\n";
	struct monitor		 mon = { cf, peer };
	struct prelogin_args	 pa;
	pid_t			 pid;
	int			 sv[2], ok, status;

	*exit_r = 1;
	memset(&pa, 0, sizeof(pa));
	if (prelogin_account(cf, &pa) == -1 || chroot_ready(cf->chroot_dir) == -1)
		return -1;
	/*
	 * The greeting leaves now, while the pre-login process is made (the
	 * client's first command waits in the socket for it).
	 */
	if (io_printf(io, "+OK %s\r\n", banner) != IO_OK ||
	    io_flush(io) != IO_OK) {
		session_log_end(END_EOF, NULL, peer->name);
		return 0;
	}
	log_info("connection from %s", peer->name);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		fatal("socketpair");
	if ((pid = fork()) == -1)
		fatal("fork");
	if (pid == 0) {
		close(sv[0]);
		(void)setpgid(0, 0);
		io_free(io);		/* the monitor's; the child makes its own */
		pa.monitor_fd = sv[1];
		pa.cleartext_ok = cleartext_ok;
		pa.apop_stamp = cf->auth.apop_stamp;
		prelogin_run(cf, peer, &pa);
	}
	(void)setpgid(pid, pid);	/* whichever of the two runs first */
	close(sv[1]);
	ok = ps_monitor(sv[0], check_forked, &mon, user_r, hand_r);
	close(sv[0]);
	status = reap_prelogin(pid);
	if (WIFSIGNALED(status)) {
		/* The sandbox killed it, or it crashed: tell the client. */
		log_warnx("pre-login process for %s killed by signal %d",
		    peer->name, WTERMSIG(status));
		(void)io_write(io, crashed, sizeof(crashed) - 1);
		(void)io_flush(io);
		ok = 0;
	} else
		*exit_r = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
	if (ok && *exit_r != 0) {
		log_warnx("pre-login process failed after the login");
		ok = 0;
	}
	if (!ok)
		monitor_reap();
	return ok;
}
