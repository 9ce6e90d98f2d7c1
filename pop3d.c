/*
 * pop3d.c: main().  Serves one POP3 session on stdin/stdout.  Starts as
 * root under xinetd or systemd: authenticates as root, takes the
 * session lock, then drops to the mail user (groups, gid, uid, verified)
 * before any mailbox byte is read.  The only file that changes ids.
 * Started by anyone else, it serves that user's own mailbox only.
 */
#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "io.h"
#include "log.h"
#include "mbox.h"
#include "session.h"

#define DEFAULT_SERVICE		"pop3d"
#define DEFAULT_MAILBOX		"/var/mail/%u"
#define DEFAULT_TIMEOUT		600
#define DEFAULT_RUNDIR		"/run/pop3d"
#define DEFAULT_MAILGROUP	"mail"
#define LOCK_TIMEOUT		30
#define POP3D_VERSION		"0.1"

struct pop3d_config {
	struct auth_config	 auth;
	int			 timeout;
	const char		*rundir;
	const char		*mail_group;
	const char		*recover;	/* -r: recover this and exit */
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

struct privgroup {
	gid_t	 mail_gid;
	gid_t	 user_gid;
};

static __attribute__((noreturn)) void
usage(void)
{
	fprintf(stderr, "usage: pop3d [-dVv] [-f passwd-file] [-g group] "
	    "[-m mailbox] [-R rundir]\n"
	    "             [-s service] [-t timeout] [-r mailbox]\n");
	exit(2);
}

/* The peer, for logs and PAM_RHOST: the socket, or what the launcher says. */
static void
peer_name(char *buf, size_t bufsize)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	const char		*env;
	const void		*addr = NULL;

	if (getpeername(STDIN_FILENO, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET)
			addr = &((struct sockaddr_in *)&ss)->sin_addr;
		else if (ss.ss_family == AF_INET6)
			addr = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		if (addr != NULL &&
		    inet_ntop(ss.ss_family, addr, buf, bufsize) != NULL)
			return;
		if (ss.ss_family == AF_UNIX) {
			(void)snprintf(buf, bufsize, "local");
			return;
		}
	}
	if ((env = getenv("REMOTE_ADDR")) == NULL)
		env = getenv("REMOTE_HOST");
	if (env != NULL && *env != '\0') {
		(void)log_sanitize(buf, bufsize, env, strlen(env));
		return;
	}
	(void)snprintf(buf, bufsize, "local");
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
 * Drops root for good: the user's groups, gid and uid; the mail group
 * stays only as the saved gid, for dotlocks.  Proves the drop.
 */
static void
priv_drop(const struct auth_user *u, const struct privgroup *pg)
{
	gid_t	 groups[NGROUPS_MAX];
	int	 ngroups = NGROUPS_MAX;
	uid_t	 r, e, s;

	if (u->uid == 0)
		fatalx("refusing to run a session as uid 0");
	if (getgrouplist(u->account, u->gid, groups, &ngroups) == -1)
		fatalx("%s: too many groups", u->account);
	if (setgroups((size_t)ngroups, groups) == -1)
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
recover_only(const struct pop3d_config *cf, struct mbox_hooks *hooks)
{
	struct stat	 sb;
	enum mbox_status st;

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
	st = mbox_recover(cf->recover, hooks);
	if (st != MBOX_OK) {
		log_warnx("%s: %s", cf->recover, mbox_status_text[st]);
		return 1;
	}
	log_info("%s: consistent", cf->recover);
	return 0;
}

int
main(int argc, char *argv[])
{
	struct pop3d_config	 cf;
	struct login		 lg;
	struct session		 s;
	struct privgroup	 pg;
	struct mbox_hooks	 hooks;
	struct mbox		*mb = NULL;
	struct group		*gr;
	struct io		*io;
	char			 peer[INET6_ADDRSTRLEN + 64];
	char			 rundir[PATH_MAX];
	enum session_end	 end;
	enum mbox_status	 st;
	int			 ch, lockfd = -1, one = 1, have_mail_gid = 0;

	memset(&cf, 0, sizeof(cf));
	cf.auth.pam_service = DEFAULT_SERVICE;
	cf.auth.mailbox_template = DEFAULT_MAILBOX;
	cf.timeout = DEFAULT_TIMEOUT;
	cf.mail_group = DEFAULT_MAILGROUP;
	while ((ch = getopt(argc, argv, "df:g:m:R:r:s:t:vV")) != -1) {
		switch (ch) {
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
		case 't':
			cf.timeout = parse_timeout(optarg);
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
	if (lg.as_root && *cf.mail_group != '\0' &&
	    (gr = getgrnam(cf.mail_group)) != NULL) {
		pg.mail_gid = gr->gr_gid;
		have_mail_gid = 1;
	}
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

	peer_name(peer, sizeof(peer));
	lg.peer = peer;
	cf.auth.rhost = peer;
	log_info("connection from %s", peer);
	if ((io = io_new(STDIN_FILENO, STDOUT_FILENO, cf.timeout)) == NULL)
		fatal("io_new");
	(void)setsockopt(STDOUT_FILENO, IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one));

	session_init(&s, io, authenticate, &lg);
	if (session_greet(&s, "pop3d ready") == -1) {
		log_info("premature disconnect from %s", peer);
		return 1;
	}
	end = session_authorization(&s);
	if (end == END_LOGIN) {
		if (rundir_ready(cf.rundir) == -1)
			st = MBOX_IOERR;
		else
			st = mbox_session_lock(cf.rundir, lg.user.mailbox,
			    &lockfd);
		if (lg.as_root) {
			pg.user_gid = lg.user.gid;
			priv_drop(&lg.user, have_mail_gid ? &pg : NULL);
			if (have_mail_gid) {
				hooks.priv_raise = raise_mail_group;
				hooks.priv_lower = lower_mail_group;
				hooks.arg = &pg;
			}
		}
		if (st == MBOX_OK)
			st = mbox_open(lg.user.mailbox, &hooks, &mb);
		if (st != MBOX_OK)
			log_warnx("%s: %s: %s", lg.user.name, lg.user.mailbox,
			    mbox_status_text[st]);
		end = session_transaction(&s, lg.user.name, mb, st);
	}
	switch (end) {
	case END_QUIT:
		break;
	case END_TIMEOUT:
		log_info("timeout, %s from %s", s.login != NULL ? s.login :
		    "before login", peer);
		break;
	case END_EOF:
		log_info("premature disconnect, %s from %s",
		    s.login != NULL ? s.login : "before login", peer);
		break;
	case END_AUTHFAIL:
		log_notice("too many failed logins from %s", peer);
		break;
	default:
		log_info("session ended on an error, %s from %s",
		    s.login != NULL ? s.login : "before login", peer);
		break;
	}
	mbox_close(mb);
	io_free(io);
	if (lockfd != -1)
		close(lockfd);
	return end == END_QUIT && s.mbox_error == MBOX_OK ? 0 : 1;
}
