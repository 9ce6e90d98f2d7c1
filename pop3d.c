/*
 * pop3d.c: main().  Serves one POP3 session on stdin/stdout, then exits.
 * Runs as whatever it was started as: the options, the greeting's
 * banner and the order of the steps are here, the steps themselves in
 * the files named below.
 *
 * Started as root (xinetd, systemd), the root monitor (monitor.c) greets
 * the client and forks the pre-login process (prelogin.c), which runs
 * the AUTHORIZATION dialogue chrooted and unprivileged; every check runs
 * in a checker process.  After a login the session lock is taken, and
 * privdrop.c drops to the mail user for good before any mailbox byte is
 * read; the session then runs as that user.  Started by anyone else, it
 * runs in one process and serves that user's own mailbox only.
 */
#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "confcheck.h"
#include "io.h"
#include "log.h"
#include "maildrop.h"
#include "monitor.h"
#include "peer.h"
#include "pop3d.h"
#include "privdrop.h"
#include "privsep.h"
#include "session.h"
#include "statedir.h"

#define DEFAULT_SERVICE		"pop3d"
#define DEFAULT_MAILBOX		"/var/mail/%u"
#define DEFAULT_TIMEOUT		600
#define DEFAULT_RUNDIR		"/run/pop3d"
#define DEFAULT_STATE_DIR	"/var/lib/pop3d"
#define DEFAULT_PRELOGIN_USER	"pop3d"
#define DEFAULT_APOP_FILE	"/etc/pop3d/apop"
#define DEFAULT_FAIL_DELAY	1000	/* ms: the least a failed login costs */
#define LOCK_TIMEOUT		30
#define PROXY_TIMEOUT		30	/* s: the most a balancer's header may take */

/* The single-process login (not root): what the callback needs. */
struct here {
	const struct pop3d_config *cf;
	const struct peer	*peer;
	struct auth_user	 user;
};

static __attribute__((noreturn)) void
usage(void)
{
	fprintf(stderr, "usage: pop3d [-cdnTVv] [-A apop-file] [-C chroot] "
	    "[-D ms] [-f passwd-file]\n"
	    "             [-L seconds] [-m mailbox] [-P cidr,...] [-R rundir]\n"
	    "             [-S statedir] [-s service] [-t timeout] [-U scheme]\n"
	    "             [-u user] [-l mailbox | -r mailbox]\n");
	exit(2);
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

/* Without privilege separation (not root): check here, log, delay. */
static enum auth_status
authenticate_here(void *arg, struct auth_request *req)
{
	struct here	*h = arg;
	struct timespec	 start;
	enum auth_status st;
	char		 name[AUTH_NAME_MAX];

	(void)clock_gettime(CLOCK_MONOTONIC, &start);
	(void)snprintf(name, sizeof(name), "%s", req->user);
	st = auth_login(&h->cf->auth, 0, req, &h->user);
	auth_log_result(st, &h->user, name, h->peer->name);
	explicit_bzero(name, sizeof(name));
	if (st != AUTH_OK)
		auth_fail_delay(&start, h->cf->fail_delay_ms);
	return st;
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

/*
 * For -r and -l: prepares the state directory of the account that owns
 * the mailbox at path (root: the file's owner; not root: whoever runs
 * pop3d) into statedir_r, then, as root, becomes that account with its
 * own primary group (a Debian mailbox's group is mail, which a session
 * never holds).  Returns 0, or -1 with the reason logged.
 */
static int
drop_to_owner(const struct pop3d_config *cf, const char *path,
    char *statedir_r, size_t size)
{
	const struct passwd	*pw;
	struct stat		 sb;
	uid_t			 uid = geteuid();

	if (uid == 0) {
		if (lstat(path, &sb) == -1)
			fatal("%s", path);
		if (sb.st_uid == 0)
			fatalx("%s: owned by root; not touching it", path);
		uid = sb.st_uid;
	}
	if ((pw = getpwuid(uid)) == NULL)
		fatalx("%s: its owner, uid %lu, has no account", path,
		    (unsigned long)uid);
	if (statedir_prepare(cf->state_dir, pw->pw_name, pw->pw_uid,
	    pw->pw_gid, statedir_r, size) == -1)
		return -1;
	if (geteuid() == 0)
		privdrop_permanently(pw->pw_uid, pw->pw_gid);
	return 0;
}

/* pop3d -r MAILBOX: finish an interrupted commit, as the file's owner. */
static int
recover_only(const struct pop3d_config *cf, struct maildrop_hooks *hooks)
{
	char		 statedir[PATH_MAX];
	enum maildrop_status st;

	if (drop_to_owner(cf, cf->recover, statedir, sizeof(statedir)) == -1)
		return 1;
	st = maildrop_recover(cf->recover, statedir, hooks);
	if (st != MAILDROP_OK) {
		log_warnx("%s: %s", cf->recover, maildrop_status_text[st]);
		return 1;
	}
	log_info("%s: consistent", cf->recover);
	return 0;
}

/* -U: the names of the UIDL schemes (maildrop.h). */
static int
parse_uidl_scheme(const char *arg)
{
	static const char *const names[MAILDROP_UIDL_SCHEME_MAX] = {
		[MAILDROP_UIDL_MD5] = "md5",
		[MAILDROP_UIDL_POPA3D] = "popa3d",
		[MAILDROP_UIDL_XUIDL] = "xuidl",
		[MAILDROP_UIDL_DOVECOT] = "dovecot",
	};
	int	 i;

	if (strcmp(arg, "pop3d") == 0)
		return MAILDROP_UIDL_MD5;
	for (i = 0; i < MAILDROP_UIDL_SCHEME_MAX; i++)
		if (strcmp(arg, names[i]) == 0)
			return i;
	fprintf(stderr, "pop3d: -U takes md5 (or pop3d), popa3d, xuidl or "
	    "dovecot\n");
	exit(2);
}

/* pop3d -l MAILBOX: its UIDL listing, read-only, as the file's owner. */
static int
list_only(const struct pop3d_config *cf, struct maildrop_hooks *hooks)
{
	char		 statedir[PATH_MAX];
	enum maildrop_status st;

	if (drop_to_owner(cf, cf->list, statedir, sizeof(statedir)) == -1)
		return 1;
	if ((st = maildrop_list(cf->list, statedir, hooks, stdout)) !=
	    MAILDROP_OK) {
		log_warnx("%s: %s", cf->list, maildrop_status_text[st]);
		return 1;
	}
	return 0;
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

/* Parses the command line into cf; exits on a bad option. */
static void
options(int argc, char *argv[], struct pop3d_config *cf)
{
	const char	*why;
	uint64_t	 n;
	int		 ch;

	memset(cf, 0, sizeof(*cf));
	cf->auth.pam_service = DEFAULT_SERVICE;
	cf->auth.mailbox_template = DEFAULT_MAILBOX;
	cf->timeout = DEFAULT_TIMEOUT;
	cf->prelogin_user = DEFAULT_PRELOGIN_USER;
	cf->fail_delay_ms = DEFAULT_FAIL_DELAY;
	while ((ch = getopt(argc, argv,
	    "A:C:cD:df:L:l:m:nP:R:r:S:s:Tt:U:u:vV")) != -1) {
		switch (ch) {
		case 'A':
			cf->auth.apop_file = optarg;
			break;
		case 'C':
			cf->chroot_dir = optarg;
			break;
		case 'c':
			cf->cleartext_protected = 1;
			break;
		case 'D':
			if (session_parse_number(optarg, 60000, &n) == -1) {
				fprintf(stderr, "pop3d: -D takes 0 to 60000 "
				    "milliseconds\n");
				exit(2);
			}
			cf->fail_delay_ms = (int)n;
			break;
		case 'd':
			cf->log_stderr = 1;
			break;
		case 'f':
			cf->auth.passwd_file = optarg;
			break;
		case 'L':
			if (session_parse_number(optarg, 86400, &n) == -1 ||
			    n < 3) {
				fprintf(stderr, "pop3d: -L takes 3 to 86400 "
				    "seconds\n");
				exit(2);
			}
			cf->dotlock_stale = (int)n;
			break;
		case 'l':
			/* A tool for the administrator: it tells them. */
			cf->list = optarg;
			cf->log_stderr = 1;
			break;
		case 'm':
			cf->auth.mailbox_template = optarg;
			break;
		case 'n':
			cf->check_only = 1;
			break;
		case 'P':
			if (proxy_nets_parse(optarg, &cf->proxy_nets,
			    &why) == -1) {
				fprintf(stderr, "pop3d: -P %s: %s\n", optarg,
				    why);
				exit(2);
			}
			break;
		case 'R':
			cf->rundir = optarg;
			break;
		case 'r':
			cf->recover = optarg;
			break;
		case 'S':
			cf->state_dir = optarg;
			break;
		case 's':
			cf->auth.pam_service = optarg;
			break;
		case 'T':
			cf->marked_protected = 1;
			break;
		case 't':
			cf->timeout = parse_timeout(optarg);
			break;
		case 'U':
			cf->uidl_scheme = parse_uidl_scheme(optarg);
			break;
		case 'u':
			cf->prelogin_user = optarg;
			break;
		case 'v':
			cf->verbose = 1;
			break;
		case 'V':
			printf("pop3d %s\n", POP3D_VERSION);
			exit(0);
		default:
			usage();
		}
	}
	if (optind != argc || (cf->check_only && cf->recover != NULL) ||
	    (cf->list != NULL && (cf->recover != NULL || cf->check_only)))
		usage();
}

/* The run directory and the chroot, when the options left them unset. */
static void
default_dirs(struct pop3d_config *cf, int as_root, char *rundir,
    size_t rundirsize, char *chrootdir, size_t chrootsize)
{
	const char	*xdg;

	if (cf->rundir == NULL) {
		if (as_root)
			cf->rundir = DEFAULT_RUNDIR;
		else {
			if ((xdg = getenv("XDG_RUNTIME_DIR")) != NULL &&
			    *xdg == '/')
				(void)snprintf(rundir, rundirsize, "%s/pop3d",
				    xdg);
			else
				(void)snprintf(rundir, rundirsize,
				    "/tmp/pop3d-%lu", (unsigned long)getuid());
			cf->rundir = rundir;
		}
	}
	if (cf->chroot_dir == NULL) {
		(void)snprintf(chrootdir, chrootsize, "%s/empty", cf->rundir);
		cf->chroot_dir = chrootdir;
	}
}

/*
 * The state directory, when -S left it unset: /var/lib/pop3d as root.
 * A pop3d that is not root keeps its state where the XDG base directory
 * specification puts state, $XDG_STATE_HOME/pop3d, else in
 * $HOME/.local/state/pop3d; with neither set (a service account), in the
 * run directory, which may not survive a reboot: pass -S for those.
 */
static void
default_state_dir(struct pop3d_config *cf, int as_root, char *buf,
    size_t bufsize)
{
	const char	*env;

	if (cf->state_dir != NULL)
		return;
	if (as_root)
		cf->state_dir = DEFAULT_STATE_DIR;
	else {
		if ((env = getenv("XDG_STATE_HOME")) != NULL && *env == '/')
			(void)snprintf(buf, bufsize, "%s/pop3d", env);
		else if ((env = getenv("HOME")) != NULL && *env == '/')
			(void)snprintf(buf, bufsize, "%s/.local/state/pop3d",
			    env);
		else
			(void)snprintf(buf, bufsize, "%s", cf->rundir);
		cf->state_dir = buf;
	}
}

/* The greeting's banner, with an APOP timestamp only when APOP is usable. */
static void
make_banner(struct pop3d_config *cf, char *stamp, size_t stampsize,
    char *banner, size_t bannersize)
{
	/* curl picks APOP whenever it sees a timestamp, and never falls back. */
	if (cf->auth.apop_file == NULL && access(DEFAULT_APOP_FILE, F_OK) == 0)
		cf->auth.apop_file = DEFAULT_APOP_FILE;
	if (cf->auth.apop_file != NULL &&
	    auth_apop_usable(cf->auth.apop_file) == -1)
		cf->auth.apop_file = NULL;
	if (cf->auth.apop_file != NULL) {
		apop_stamp(stamp, stampsize);
		cf->auth.apop_stamp = stamp;
		(void)snprintf(banner, bannersize, "pop3d ready %s", stamp);
	} else
		(void)snprintf(banner, bannersize, "pop3d ready");
}

int
main(int argc, char *argv[])
{
	struct pop3d_config	 cf;
	struct peer		 peer;
	struct auth_user	 user;
	struct here		 here;
	struct session		 s;
	struct maildrop_hooks	 hooks;
	struct ps_msg		*hand;
	struct maildrop	*mb = NULL;
	struct io		*io;
	char			 rundir[PATH_MAX], chrootdir[PATH_MAX];
	char			 statebuf[PATH_MAX], statedir[PATH_MAX];
	char			 stamp[512], banner[600];
	enum session_end	 end;
	enum maildrop_status	 st;
	int			 lockfd = -1, one = 1, as_root, cleartext_ok;
	int			 ok, status;

	options(argc, argv, &cf);
	if (isatty(STDIN_FILENO))
		cf.log_stderr = 1;
	log_init("pop3d", cf.log_stderr, cf.verbose);
	(void)signal(SIGPIPE, SIG_IGN);
	(void)umask(077);
	no_core_dumps();

	memset(&hooks, 0, sizeof(hooks));
	hooks.lock_timeout = LOCK_TIMEOUT;
	hooks.uidl_scheme = cf.uidl_scheme;
	hooks.dotlock_stale = cf.dotlock_stale;
	as_root = geteuid() == 0;
	default_dirs(&cf, as_root, rundir, sizeof(rundir), chrootdir,
	    sizeof(chrootdir));
	default_state_dir(&cf, as_root, statebuf, sizeof(statebuf));
	if (cf.recover != NULL)
		return recover_only(&cf, &hooks);
	if (cf.list != NULL)
		return list_only(&cf, &hooks);
	if (cf.check_only)
		return confcheck_run(&cf);
	/* Before anything is sent: a balancer's header comes first. */
	if (peer_identify(STDIN_FILENO, &cf.proxy_nets,
	    (cf.timeout < PROXY_TIMEOUT ? cf.timeout : PROXY_TIMEOUT) * 1000,
	    &peer) == -1)
		return 1;
	cf.auth.rhost = peer.name;
	cleartext_ok = !cf.cleartext_protected || cf.marked_protected ||
	    peer.local || peer.protected;
	(void)setsockopt(STDOUT_FILENO, IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one));
	make_banner(&cf, stamp, sizeof(stamp), banner, sizeof(banner));
	if ((io = io_new(STDIN_FILENO, STDOUT_FILENO, cf.timeout)) == NULL)
		fatal("io_new");

	memset(&user, 0, sizeof(user));
	session_init(&s, io, NULL, NULL);	/* the summary's clock starts */
	if (as_root) {
		if (rundir_ready(cf.rundir) == -1)
			unavailable();
		if ((hand = calloc(1, sizeof(*hand))) == NULL)
			fatal("calloc");
		ok = monitor_login(&cf, &peer, io, &s, banner, cleartext_ok,
		    &user, hand, &status);
		if (ok == -1)
			unavailable();
		if (ok == 0) {
			io_free(io);
			free(hand);
			return status;
		}
		if (io_preload(io, hand->data, hand->len) == -1)
			fatal("io_preload");
		explicit_bzero(hand, sizeof(*hand));
		free(hand);
		end = END_LOGIN;
	} else {
		here.cf = &cf;
		here.peer = &peer;
		session_init(&s, io, authenticate_here, &here);
		s.cleartext_ok = cleartext_ok;
		s.apop_stamp = cf.auth.apop_stamp;
		if (session_greet(&s, banner) == -1)
			end = END_EOF;
		else {
			log_info("connection from %s", peer.name);
			end = session_authorization(&s);
		}
		user = here.user;
	}
	if (end == END_LOGIN) {
		st = statedir_prepare(cf.state_dir, user.account, user.uid,
		    user.gid, statedir, sizeof(statedir)) == -1 ?
		    MAILDROP_IOERR : MAILDROP_OK;
		if (as_root)
			privdrop_permanently(user.uid, user.gid);
		log_debug("session process %ld: uid %lu, gid %lu",
		    (long)getpid(), (unsigned long)getuid(),
		    (unsigned long)getgid());
		if (st == MAILDROP_OK)
			st = maildrop_session_lock(statedir, user.mailbox,
			    &lockfd);
		if (st == MAILDROP_OK)
			st = maildrop_open(user.mailbox, statedir, &hooks,
			    &mb);
		if (st != MAILDROP_OK)
			log_warnx("%s: %s: %s", user.name, user.mailbox,
			    maildrop_status_text[st]);
		end = session_transaction(&s, user.name, mb, st);
	}
	session_log_end(end, s.login, peer.name);
	session_log_summary(&s, end, peer.name);
	maildrop_close(mb);
	io_free(io);
	monitor_reap();
	if (lockfd != -1)
		close(lockfd);
	return end == END_QUIT && s.maildrop_error == MAILDROP_OK ? 0 : 1;
}
