/*
 * pop3d.c: main().  Serves one POP3 session on stdin/stdout.  Started as
 * root (xinetd, systemd), it forks the pre-login process, which chroots
 * to an empty directory, drops to an unprivileged account and runs the
 * AUTHORIZATION dialogue; the root monitor checks each fixed-size request
 * in a process of its own (PAM included) that exits.  After a login the
 * monitor takes the session lock and drops to the mail user (groups,
 * gid, uid, verified) before any mailbox byte is read.  Started by
 * anyone else, it runs in one process and serves that user's own mailbox
 * only.  The only file that forks, chroots or changes ids.
 */
#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
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
#include "maildrop.h"
#include "privsep.h"
#include "session.h"

#define DEFAULT_SERVICE		"pop3d"
#define DEFAULT_MAILBOX		"/var/mail/%u"
#define DEFAULT_TIMEOUT		600
#define DEFAULT_RUNDIR		"/run/pop3d"
#define DEFAULT_MAILGROUP	"mail"
#define DEFAULT_PRELOGIN_USER	"pop3d"
#define DEFAULT_APOP_FILE	"/etc/pop3d/apop"
#define DEFAULT_FAIL_DELAY	1000	/* ms: the least a failed login costs */
#define LOCK_TIMEOUT		30
#define POP3D_VERSION		"0.1"

struct pop3d_config {
	struct auth_config	 auth;
	int			 timeout;
	const char		*rundir;
	const char		*mail_group;
	const char		*recover;	/* -r: recover this and exit */
	const char		*prelogin_user;	/* -u */
	const char		*chroot_dir;	/* -C */
	int			 fail_delay_ms;	/* -D */
	int			 cleartext_protected;	/* -c */
	int			 marked_protected;	/* -T */
	int			 log_stderr;
	int			 verbose;
};

/* What the authenticate callback learns, for main() to act on. */
struct login {
	const struct pop3d_config *cf;
	const char		*peer;
	struct auth_user	 user;
	int			 as_root;
};

/* What the monitor's checking process sends back. */
struct check_result {
	enum auth_status	 status;
	struct auth_user	 user;
};

struct privgroup {
	gid_t	 mail_gid;
	gid_t	 user_gid;
};

static __attribute__((noreturn)) void
usage(void)
{
	fprintf(stderr, "usage: pop3d [-cdTVv] [-A apop-file] [-C chroot] "
	    "[-D ms] [-f passwd-file]\n"
	    "             [-g group] [-m mailbox] [-R rundir] [-s service] "
	    "[-t timeout]\n"
	    "             [-u user] [-r mailbox]\n");
	exit(2);
}

/*
 * Is the socket a relay's (stunnel exec= gives its child a loopback TCP
 * pair) rather than the client's?  A launcher that names another port in
 * REMOTE_PORT than the socket's peer says so; systemd's matches.
 */
static int
relayed(const struct sockaddr_storage *ss)
{
	const char	*env = getenv("REMOTE_PORT");
	unsigned int	 port;
	uint64_t	 n;

	if (ss->ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
	else if (ss->ss_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	else
		return 0;
	if (env == NULL || session_parse_number(env, 65535, &n) == -1)
		return 0;
	return n != port;
}

/*
 * The peer, for logs and PAM_RHOST: the socket, or what the launcher says.
 * Returns 1 when the connection is local (loopback, a Unix socket, or no
 * socket at all), where a cleartext password does not cross a network.
 */
static int
peer_name(char *buf, size_t bufsize)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	const char		*env;
	const void		*addr = NULL;

	if (getpeername(STDIN_FILENO, (struct sockaddr *)&ss, &len) == 0 &&
	    !relayed(&ss)) {
		if (ss.ss_family == AF_INET) {
			const struct in_addr *a =
			    &((struct sockaddr_in *)&ss)->sin_addr;

			if (inet_ntop(AF_INET, a, buf, bufsize) != NULL)
				return (ntohl(a->s_addr) >> 24) == 127;
		} else if (ss.ss_family == AF_INET6) {
			const struct in6_addr *a =
			    &((struct sockaddr_in6 *)&ss)->sin6_addr;

			addr = a;
			if (inet_ntop(AF_INET6, addr, buf, bufsize) != NULL)
				return IN6_IS_ADDR_LOOPBACK(a) ||
				    (IN6_IS_ADDR_V4MAPPED(a) &&
				    a->s6_addr[12] == 127);
		}
		if (ss.ss_family == AF_UNIX && getenv("REMOTE_ADDR") == NULL &&
		    getenv("REMOTE_HOST") == NULL) {
			(void)snprintf(buf, bufsize, "local");
			return 1;
		}
		/* A relay (stunnel exec=, socat) names the real peer. */
	}
	if ((env = getenv("REMOTE_ADDR")) == NULL)
		env = getenv("REMOTE_HOST");
	if (env != NULL && *env != '\0') {
		/* Said by a launcher; nothing proves it is local. */
		(void)log_sanitize(buf, bufsize, env, strlen(env));
		return 0;
	}
	(void)snprintf(buf, bufsize, "local");
	return 1;
}

/* The APOP timestamp: new for every greeting (RFC 1939 section 7). */
static void
apop_stamp(char *buf, size_t bufsize)
{
	unsigned char	 r[8];
	char		 host[256];

	if (getrandom(r, sizeof(r), 0) != sizeof(r))
		fatal("getrandom");
	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		(void)snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	(void)snprintf(buf, bufsize, "<%ld.%lld.%02x%02x%02x%02x%02x%02x%02x%02x"
	    "@%s>", (long)getpid(), (long long)time(NULL), r[0], r[1], r[2],
	    r[3], r[4], r[5], r[6], r[7], host);
	explicit_bzero(r, sizeof(r));
}

/* Makes a failed login cost at least ms milliseconds since *start. */
static void
fail_delay(const struct timespec *start, int ms)
{
	struct timespec	 now, left;
	long long	 ns;

	(void)clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (long long)ms * 1000000LL -
	    ((long long)(now.tv_sec - start->tv_sec) * 1000000000LL +
	    (now.tv_nsec - start->tv_nsec));
	if (ns <= 0)
		return;
	left.tv_sec = (time_t)(ns / 1000000000LL);
	left.tv_nsec = (long)(ns % 1000000000LL);
	while (nanosleep(&left, &left) == -1 && errno == EINTR)
		;
}

static enum auth_status
authenticate(void *arg, struct auth_request *req)
{
	struct login	*lg = arg;
	enum auth_status st;

	st = auth_check(&lg->cf->auth, req, &lg->user);
	if (st == AUTH_OK)
		lg->user.known = 1;
	if (st == AUTH_OK && !lg->as_root && lg->user.uid != getuid()) {
		log_warnx("%s: not running as root, so only uid %lu can be "
		    "served", lg->user.name, (unsigned long)getuid());
		st = AUTH_FAIL;
	} else if (st == AUTH_OK && lg->user.uid == 0) {
		log_warnx("%s: refusing to serve a mailbox as uid 0",
		    lg->user.name);
		st = AUTH_FAIL;
	}
	if (st == AUTH_OK)
		log_info("login ok: %s from %s", lg->user.name, lg->peer);
	else if (st == AUTH_TEMPFAIL)
		log_warnx("login failed from %s: authentication unavailable",
		    lg->peer);
	else if (lg->user.known)
		log_notice("login failed: %s from %s", req->user, lg->peer);
	else
		log_notice("login failed: unknown user from %s", lg->peer);
	return st;
}

/* Without privilege separation (not root): check here, then delay. */
static enum auth_status
authenticate_here(void *arg, struct auth_request *req)
{
	struct login	*lg = arg;
	struct timespec	 start;
	enum auth_status st;

	(void)clock_gettime(CLOCK_MONOTONIC, &start);
	st = authenticate(lg, req);
	if (st != AUTH_OK)
		fail_delay(&start, lg->cf->fail_delay_ms);
	return st;
}

/* The last authentication process, to be reaped at the end. */
static pid_t	 auth_child = -1;

/* Reaps the authentication process, if one is left. */
static void
reap_auth_child(void)
{
	if (auth_child != -1)
		while (waitpid(auth_child, NULL, 0) == -1 && errno == EINTR)
			;
	auth_child = -1;
}

/*
 * The monitor's check: runs authenticate() (PAM or the files, as root)
 * in a process that exits, so that nothing a module leaves behind stays
 * in the session; only a fixed-size result comes back.
 */
static enum auth_status
check_forked(void *arg, struct auth_request *req, struct auth_user *user_r)
{
	struct login		*lg = arg;
	struct check_result	 res;
	struct timespec		 start;
	struct pollfd		 pfd;
	pid_t			 pid;
	ssize_t			 n;
	int			 p[2], status;

	reap_auth_child();
	(void)clock_gettime(CLOCK_MONOTONIC, &start);
	memset(&res, 0, sizeof(res));
	res.status = AUTH_TEMPFAIL;
	if (pipe2(p, O_CLOEXEC) == -1) {
		log_warn("pipe");
		explicit_bzero(req, sizeof(*req));
		return AUTH_TEMPFAIL;
	}
	if ((pid = fork()) == -1) {
		log_warn("fork");
		close(p[0]);
		close(p[1]);
		explicit_bzero(req, sizeof(*req));
		return AUTH_TEMPFAIL;
	}
	if (pid == 0) {
		close(p[0]);
		res.status = authenticate(lg, req);
		res.user = lg->user;
		explicit_bzero(req, sizeof(*req));
		n = write(p[1], &res, sizeof(res));
		_exit(n == (ssize_t)sizeof(res) ? 0 : 1);
	}
	explicit_bzero(req, sizeof(*req));
	close(p[1]);
	/* A PAM module that hangs must not hold the connection forever. */
	pfd.fd = p[0];
	pfd.events = POLLIN;
	while ((n = poll(&pfd, 1, lg->cf->timeout * 1000)) == -1 &&
	    errno == EINTR)
		;
	if (n == 1) {
		do
			n = read(p[0], &res, sizeof(res));
		while (n == -1 && errno == EINTR);
	} else {
		log_warnx("the authentication process took longer than %d s",
		    lg->cf->timeout);
		(void)kill(pid, SIGKILL);
		n = -1;
	}
	close(p[0]);
	/*
	 * With its whole record in, the process has nothing left to do but
	 * unmap itself: it is reaped at the end of the session rather than
	 * waited for on the login's path.  Anything less: it is stopped.
	 */
	status = 0;
	if (n == (ssize_t)sizeof(res))
		auth_child = pid;
	else {
		(void)kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
			;
	}
	if (n != (ssize_t)sizeof(res) || (res.status != AUTH_OK &&
	    res.status != AUTH_FAIL && res.status != AUTH_TEMPFAIL)) {
		log_warnx("the authentication process failed");
		res.status = AUTH_TEMPFAIL;
	}
	if (res.status == AUTH_OK)
		*user_r = res.user;
	else
		fail_delay(&start, lg->cf->fail_delay_ms);
	status = (int)res.status;
	explicit_bzero(&res, sizeof(res));
	return (enum auth_status)status;
}

static int
raise_mail_group(void *arg)
{
	const struct privgroup *pg = arg;

	return setegid(pg->mail_gid);
}

static void
lower_mail_group(void *arg)
{
	const struct privgroup *pg = arg;

	if (setegid(pg->user_gid) == -1)
		fatal("setegid");
}

/*
 * Drops root for good: the user's uid and primary gid; the mail group
 * stays only as the saved gid, for dotlocks.  The mailbox must be the
 * user's own, so supplementary groups are of no use to a session and it
 * runs without them (which also spares a walk of the group database).
 * Proves the drop.
 */
static void
priv_drop(const struct auth_user *u, const struct privgroup *pg)
{
	uid_t	 r, e, s;

	if (u->uid == 0)
		fatalx("refusing to run a session as uid 0");
	if (setgroups(1, &u->gid) == -1)
		fatal("setgroups");
	if (setresgid(u->gid, u->gid, pg != NULL ? pg->mail_gid : u->gid) == -1)
		fatal("setresgid");
	if (setresuid(u->uid, u->uid, u->uid) == -1)
		fatal("setresuid");
	if (getresuid(&r, &e, &s) == -1 || r != u->uid || e != u->uid ||
	    s != u->uid)
		fatalx("uid drop did not take");
	if (setuid(0) != -1 || seteuid(0) != -1)
		fatalx("could regain root after dropping privileges");
}

/* Makes sure dir exists, is ours and is closed to others. */
static int
rundir_ready(const char *dir)
{
	struct stat	 sb;

	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		log_warn("mkdir %s", dir);
		return -1;
	}
	if (lstat(dir, &sb) == -1) {
		log_warn("%s", dir);
		return -1;
	}
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != geteuid() ||
	    (sb.st_mode & 022) != 0) {
		log_warnx("%s: not a directory of uid %lu closed to others",
		    dir, (unsigned long)geteuid());
		return -1;
	}
	return 0;
}

static void
no_core_dumps(void)
{
	struct rlimit	 rl = { 0, 0 };

	(void)setrlimit(RLIMIT_CORE, &rl);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static int
parse_timeout(const char *arg)
{
	uint64_t	 n;

	if (session_parse_number(arg, 86400, &n) == -1 || n == 0) {
		fprintf(stderr, "pop3d: -t takes 1 to 86400 seconds\n");
		exit(2);
	}
	return (int)n;
}

/* pop3d -r MAILBOX: finish an interrupted commit, as the file's owner. */
static int
recover_only(const struct pop3d_config *cf, struct maildrop_hooks *hooks)
{
	struct stat	 sb;
	enum maildrop_status st;

	if (geteuid() == 0) {
		if (lstat(cf->recover, &sb) == -1)
			fatal("%s", cf->recover);
		if (sb.st_uid == 0)
			fatalx("%s: owned by root; not touching it",
			    cf->recover);
		if (setgroups(0, NULL) == -1 ||
		    setresgid(sb.st_gid, sb.st_gid, sb.st_gid) == -1 ||
		    setresuid(sb.st_uid, sb.st_uid, sb.st_uid) == -1)
			fatal("dropping to the owner of %s", cf->recover);
		hooks->priv_raise = NULL;
		hooks->priv_lower = NULL;
	}
	st = maildrop_recover(cf->recover, hooks);
	if (st != MAILDROP_OK) {
		log_warnx("%s: %s", cf->recover, maildrop_status_text[st]);
		return 1;
	}
	log_info("%s: consistent", cf->recover);
	return 0;
}

/* Logs how a session ended, unless by QUIT. */
static void
log_end(enum session_end end, const char *login, const char *peer)
{
	const char	*who = login != NULL ? login : "before login";

	switch (end) {
	case END_QUIT:
	case END_LOGIN:
	case END_NONE:
		break;
	case END_TIMEOUT:
		log_info("timeout, %s from %s", who, peer);
		break;
	case END_EOF:
		log_info("premature disconnect, %s from %s", who, peer);
		break;
	case END_AUTHFAIL:
		log_notice("too many failed logins from %s", peer);
		break;
	case END_ABUSE:
		log_notice("too many invalid commands from %s", peer);
		break;
	case END_IOERR:
		log_info("session ended on an error, %s from %s", who, peer);
		break;
	}
}

/*
 * A setup error before the greeting: tell the client, briefly (the log
 * has the reason), and end.
 */
static __attribute__((noreturn)) void
unavailable(void)
{
	static const char msg[] = "-ERR [SYS/TEMP] pop3d is misconfigured; "
	    "the administrator has been told (see the mail log)\r\n";
	ssize_t	 n;

	n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
	(void)n;
	exit(1);
}

/* The chroot of the pre-login process: empty, root's, closed to others. */
static int
chroot_ready(const char *dir)
{
	struct stat	 sb;

	DIR		*d;
	struct dirent	*de;
	int		 entries = 0;

	if (mkdir(dir, 0755) == 0)
		(void)chmod(dir, 0755);		/* whatever the umask */
	else if (errno != EEXIST) {
		log_warn("mkdir %s", dir);
		return -1;
	}
	if (lstat(dir, &sb) == -1 || !S_ISDIR(sb.st_mode) || sb.st_uid != 0 ||
	    (sb.st_mode & 022) != 0) {
		log_warnx("%s: not a directory of root's closed to others", dir);
		return -1;
	}
	if ((d = opendir(dir)) == NULL) {
		log_warn("%s", dir);
		return -1;
	}
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			entries++;
	closedir(d);
	if (entries > 0) {
		log_warnx("%s: the pre-login chroot must be empty", dir);
		return -1;
	}
	return 0;
}

/*
 * The pre-login process: chrooted, unprivileged, it alone reads from the
 * network before a login.  Hands the unread input to the monitor after a
 * login and exits.
 */
static __attribute__((noreturn)) void
prelogin(const struct pop3d_config *cf, int fd, uid_t uid, gid_t gid,
    int cleartext_ok, const char *stamp, const char *peer)
{
	struct session	 s;
	struct io	*io;
	enum session_end end;

	if (chroot(cf->chroot_dir) == -1 || chdir("/") == -1)
		fatal("chroot %s", cf->chroot_dir);
	if (setgroups(1, &gid) == -1 || setresgid(gid, gid, gid) == -1 ||
	    setresuid(uid, uid, uid) == -1)
		fatal("dropping to the pre-login account");
	if (setuid(0) != -1 || seteuid(0) != -1 || setegid(0) != -1)
		fatalx("pre-login process could regain root");
	log_debug("pre-login process %ld: uid %lu, gid %lu, chroot %s",
	    (long)getpid(), (unsigned long)getuid(), (unsigned long)getgid(),
	    cf->chroot_dir);
	if ((io = io_new(STDIN_FILENO, STDOUT_FILENO, cf->timeout)) == NULL)
		fatal("io_new");
	session_init(&s, io, ps_child_authenticate, &fd);
	s.cleartext_ok = cleartext_ok;
	s.apop_stamp = stamp;
	end = session_authorization(&s);
	if (end == END_LOGIN) {
		/* Replies to earlier pipelined commands leave first. */
		if (io_flush(io) != IO_OK || ps_child_handover(fd, io) == -1)
			_exit(1);
		_exit(0);
	}
	log_end(end, NULL, peer);
	_exit(end == END_QUIT ? 0 : 1);
}

/* The unprivileged account of the pre-login process. */
static const struct passwd *
prelogin_account(const struct pop3d_config *cf)
{
	const struct passwd	*pw;

	if ((pw = getpwnam(cf->prelogin_user)) != NULL && pw->pw_uid != 0)
		return pw;
	if (strcmp(cf->prelogin_user, DEFAULT_PRELOGIN_USER) == 0 &&
	    (pw = getpwnam("nobody")) != NULL && pw->pw_uid != 0) {
		log_notice("no account \"%s\" (make install creates it); the "
		    "pre-login process runs as nobody", cf->prelogin_user);
		return pw;
	}
	log_warnx("no unprivileged account \"%s\" for the pre-login process",
	    cf->prelogin_user);
	unavailable();
}

/*
 * Root: greets the client through io, forks the pre-login process and
 * serves it as the monitor.  Returns 1 with lg->user and the handed-over input in *hand on a login;
 * else 0 and the exit status for pop3d in *exit_r (0 after QUIT).
 */
static int
separated_login(const struct pop3d_config *cf, struct login *lg,
    struct io *io, const char *banner, int cleartext_ok, const char *stamp,
    struct ps_msg *hand, int *exit_r)
{
	const struct passwd	*pw;
	uid_t			 uid;
	gid_t			 gid;
	pid_t			 pid;
	int			 sv[2], ok, status;

	pw = prelogin_account(cf);
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	if (chroot_ready(cf->chroot_dir) == -1)
		unavailable();
	/*
	 * Set up: the greeting leaves now, while the pre-login process is
	 * made (the client's first command waits in the socket for it).
	 */
	if (io_printf(io, "+OK %s\r\n", banner) != IO_OK ||
	    io_flush(io) != IO_OK) {
		log_end(END_EOF, NULL, lg->peer);
		*exit_r = 1;
		return 0;
	}
	log_info("connection from %s", lg->peer);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		fatal("socketpair");
	if ((pid = fork()) == -1)
		fatal("fork");
	if (pid == 0) {
		close(sv[0]);
		io_free(io);		/* the monitor's; the child makes its own */
		prelogin(cf, sv[1], uid, gid, cleartext_ok, stamp, lg->peer);
	}
	close(sv[1]);
	ok = ps_monitor(sv[0], check_forked, lg, POP3_MAX_FAILS, &lg->user,
	    hand);
	close(sv[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	*exit_r = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
	if (ok && *exit_r != 0) {
		log_warnx("pre-login process failed after the login");
		ok = 0;
	}
	if (!ok)
		reap_auth_child();
	return ok;
}

int
main(int argc, char *argv[])
{
	struct pop3d_config	 cf;
	struct login		 lg;
	struct session		 s;
	struct privgroup	 pg;
	struct maildrop_hooks	 hooks;
	struct ps_msg		 hand;
	struct maildrop		*mb = NULL;
	struct group		*gr;
	struct io		*io;
	char			 peer[INET6_ADDRSTRLEN + 64];
	char			 rundir[PATH_MAX], chrootdir[PATH_MAX];
	char			 stamp[512], banner[600];
	enum session_end	 end;
	enum maildrop_status	 st;
	uint64_t		 n;
	int			 ch, lockfd = -1, one = 1, have_mail_gid = 0;
	int			 local, cleartext_ok;

	memset(&cf, 0, sizeof(cf));
	cf.auth.pam_service = DEFAULT_SERVICE;
	cf.auth.mailbox_template = DEFAULT_MAILBOX;
	cf.timeout = DEFAULT_TIMEOUT;
	cf.mail_group = DEFAULT_MAILGROUP;
	cf.prelogin_user = DEFAULT_PRELOGIN_USER;
	cf.fail_delay_ms = DEFAULT_FAIL_DELAY;
	while ((ch = getopt(argc, argv, "A:C:cD:df:g:m:R:r:s:Tt:u:vV")) != -1) {
		switch (ch) {
		case 'A':
			cf.auth.apop_file = optarg;
			break;
		case 'C':
			cf.chroot_dir = optarg;
			break;
		case 'c':
			cf.cleartext_protected = 1;
			break;
		case 'D':
			if (session_parse_number(optarg, 60000, &n) == -1) {
				fprintf(stderr, "pop3d: -D takes 0 to 60000 "
				    "milliseconds\n");
				return 2;
			}
			cf.fail_delay_ms = (int)n;
			break;
		case 'd':
			cf.log_stderr = 1;
			break;
		case 'f':
			cf.auth.passwd_file = optarg;
			break;
		case 'g':
			cf.mail_group = optarg;
			break;
		case 'm':
			cf.auth.mailbox_template = optarg;
			break;
		case 'R':
			cf.rundir = optarg;
			break;
		case 'r':
			cf.recover = optarg;
			break;
		case 's':
			cf.auth.pam_service = optarg;
			break;
		case 'T':
			cf.marked_protected = 1;
			break;
		case 't':
			cf.timeout = parse_timeout(optarg);
			break;
		case 'u':
			cf.prelogin_user = optarg;
			break;
		case 'v':
			cf.verbose = 1;
			break;
		case 'V':
			printf("pop3d %s\n", POP3D_VERSION);
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (isatty(STDIN_FILENO))
		cf.log_stderr = 1;
	log_init("pop3d", cf.log_stderr, cf.verbose);
	(void)signal(SIGPIPE, SIG_IGN);
	(void)umask(077);
	no_core_dumps();

	memset(&hooks, 0, sizeof(hooks));
	hooks.lock_timeout = LOCK_TIMEOUT;
	if (cf.recover != NULL)
		return recover_only(&cf, &hooks);

	memset(&lg, 0, sizeof(lg));
	lg.cf = &cf;
	lg.as_root = geteuid() == 0;
	if (cf.rundir == NULL) {
		if (lg.as_root)
			cf.rundir = DEFAULT_RUNDIR;
		else {
			const char *xdg = getenv("XDG_RUNTIME_DIR");

			if (xdg != NULL && *xdg == '/')
				(void)snprintf(rundir, sizeof(rundir),
				    "%s/pop3d", xdg);
			else
				(void)snprintf(rundir, sizeof(rundir),
				    "/tmp/pop3d-%lu", (unsigned long)getuid());
			cf.rundir = rundir;
		}
	}
	if (cf.chroot_dir == NULL) {
		(void)snprintf(chrootdir, sizeof(chrootdir), "%s/empty",
		    cf.rundir);
		cf.chroot_dir = chrootdir;
	}

	local = peer_name(peer, sizeof(peer));
	lg.peer = peer;
	cf.auth.rhost = peer;
	cleartext_ok = !cf.cleartext_protected || cf.marked_protected || local;
	(void)setsockopt(STDOUT_FILENO, IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one));

	/* APOP only when its secrets are usable: curl never falls back. */
	if (cf.auth.apop_file == NULL && access(DEFAULT_APOP_FILE, F_OK) == 0)
		cf.auth.apop_file = DEFAULT_APOP_FILE;
	if (cf.auth.apop_file != NULL &&
	    auth_apop_usable(cf.auth.apop_file) == -1)
		cf.auth.apop_file = NULL;
	if (cf.auth.apop_file != NULL) {
		apop_stamp(stamp, sizeof(stamp));
		cf.auth.apop_stamp = stamp;
		(void)snprintf(banner, sizeof(banner), "pop3d ready %s", stamp);
	} else
		(void)snprintf(banner, sizeof(banner), "pop3d ready");

	if (lg.as_root) {
		if (rundir_ready(cf.rundir) == -1)
			unavailable();
		if ((io = io_new(STDIN_FILENO, STDOUT_FILENO,
		    cf.timeout)) == NULL)
			fatal("io_new");
		if (!separated_login(&cf, &lg, io, banner, cleartext_ok,
		    cf.auth.apop_stamp, &hand, &ch)) {
			io_free(io);
			return ch;
		}
		if (io_preload(io, hand.data, hand.len) == -1)
			fatal("io_preload");
		explicit_bzero(&hand, sizeof(hand));
		session_init(&s, io, NULL, NULL);
		end = END_LOGIN;
	} else {
		if ((io = io_new(STDIN_FILENO, STDOUT_FILENO,
		    cf.timeout)) == NULL)
			fatal("io_new");
		session_init(&s, io, authenticate_here, &lg);
		s.cleartext_ok = cleartext_ok;
		s.apop_stamp = cf.auth.apop_stamp;
		if (session_greet(&s, banner) == -1)
			end = END_EOF;
		else {
			log_info("connection from %s", peer);
			end = session_authorization(&s);
		}
	}
	if (end == END_LOGIN) {
		if (rundir_ready(cf.rundir) == -1)
			st = MAILDROP_IOERR;
		else
			st = maildrop_session_lock(cf.rundir, lg.user.mailbox,
			    &lockfd);
		/* Looked up now: off the path to the greeting. */
		if (lg.as_root && *cf.mail_group != '\0' &&
		    (gr = getgrnam(cf.mail_group)) != NULL) {
			pg.mail_gid = gr->gr_gid;
			have_mail_gid = 1;
		}
		if (lg.as_root) {
			pg.user_gid = lg.user.gid;
			priv_drop(&lg.user, have_mail_gid ? &pg : NULL);
			if (have_mail_gid) {
				hooks.priv_raise = raise_mail_group;
				hooks.priv_lower = lower_mail_group;
				hooks.arg = &pg;
			}
		}
		log_debug("session process %ld: uid %lu, gid %lu",
		    (long)getpid(), (unsigned long)getuid(),
		    (unsigned long)getgid());
		if (st == MAILDROP_OK)
			st = maildrop_open(lg.user.mailbox, &hooks, &mb);
		if (st != MAILDROP_OK)
			log_warnx("%s: %s: %s", lg.user.name, lg.user.mailbox,
			    maildrop_status_text[st]);
		end = session_transaction(&s, lg.user.name, mb, st);
	}
	log_end(end, s.login, peer);
	maildrop_close(mb);
	io_free(io);
	reap_auth_child();
	if (lockfd != -1)
		close(lockfd);
	return end == END_QUIT && s.maildrop_error == MAILDROP_OK ? 0 : 1;
}
