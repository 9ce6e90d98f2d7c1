/*
 * confcheck.c: the configuration check of pop3d -n (see confcheck.h).
 * Runs as root, or as any user; reads only.  Where a rule is enforced
 * elsewhere (the chroot and the pre-login account in monitor.c, the APOP
 * file in auth.c) it is called from there, so that the check and the
 * session cannot disagree.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "confcheck.h"
#include "log.h"
#include "monitor.h"
#include "pop3d.h"
#include "proxy.h"

/*
 * liblockfile runs this setgid helper when the caller cannot write the
 * spool itself, as a session (the user's ids, no groups) cannot write
 * Debian's root:mail 2775 /var/mail.  The path is liblockfile's LOCKPROG;
 * a test build may point it elsewhere.
 */
#ifndef CONFCHECK_DOTLOCKFILE
#define CONFCHECK_DOTLOCKFILE	"/usr/bin/dotlockfile"
#endif
#define PAM_DIR			"/etc/pam.d"
#define MAIL_GROUP		"mail"
#define SPOOL_MODE		02775	/* Debian's /var/mail, root:mail */
#define APOP_DEFAULT		"/etc/pop3d/apop"	/* as in pop3d.c */
#define VALUE_MAX		(PATH_MAX + 64)

struct check {
	uid_t	 euid;
	int	 as_root;
	int	 problems;
};

static void	 problem(struct check *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	 warning(const char *, ...)
		    __attribute__((format(printf, 1, 2)));
static void	 setting(const char *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static void
problem(struct check *ck, const char *fmt, ...)
{
	va_list	 ap;

	fputs("pop3d: problem: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	ck->problems++;
}

static void
warning(const char *fmt, ...)
{
	va_list	 ap;

	fputs("pop3d: warning: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* One "name = value" line; control bytes in the value become '?'. */
static void
setting(const char *name, const char *fmt, ...)
{
	va_list	 ap;
	char	 raw[VALUE_MAX], clean[VALUE_MAX];

	va_start(ap, fmt);
	(void)vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	printf("%s = %s\n", name,
	    log_sanitize(clean, sizeof(clean), raw, strlen(raw)));
}

/*
 * The directory every mailbox of the template lies in: the part before
 * the first '%' up to its last '/'.  Returns 0, or -1 when mailboxes lie
 * in directories of their own (a '%' before the last '/': "%h/mbox").
 */
static int
spool_of(const char *tmpl, char *buf, size_t bufsize)
{
	const char	*pct, *slash = NULL, *p;

	if ((pct = strchr(tmpl, '%')) == NULL)
		pct = tmpl + strlen(tmpl);
	for (p = tmpl; p < pct; p++)
		if (*p == '/')
			slash = p;
	if (slash == NULL || strchr(slash + 1, '/') != NULL)
		return -1;
	if (slash == tmpl)
		slash++;			/* "/%u": the root directory */
	if ((size_t)(slash - tmpl) >= bufsize)
		return -1;
	memcpy(buf, tmpl, (size_t)(slash - tmpl));
	buf[slash - tmpl] = '\0';
	return 0;
}

/* The directory path lies in ("." for a bare name). */
static void
parent_of(const char *path, char *buf, size_t bufsize)
{
	const char	*slash;
	size_t		 n;

	if ((slash = strrchr(path, '/')) == NULL) {
		(void)snprintf(buf, bufsize, ".");
		return;
	}
	n = slash == path ? 1 : (size_t)(slash - path);
	(void)snprintf(buf, bufsize, "%.*s", (int)n, path);
}

/* The APOP file a session would use: -A, or the default when it exists. */
static const char *
apop_file(const struct pop3d_config *cf)
{
	if (cf->auth.apop_file != NULL)
		return cf->auth.apop_file;
	if (access(APOP_DEFAULT, F_OK) == 0)
		return APOP_DEFAULT;
	return NULL;
}

static void
print_proxy_nets(const struct proxy_nets *nets)
{
	char	 list[PROXY_NETS_MAX * (INET6_ADDRSTRLEN + 5)], a[INET6_ADDRSTRLEN];
	size_t	 i, n = 0;

	list[0] = '\0';
	for (i = 0; i < nets->n; i++) {
		if (inet_ntop(nets->net[i].family, nets->net[i].addr, a,
		    sizeof(a)) == NULL)
			(void)snprintf(a, sizeof(a), "?");
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s/%u",
		    i > 0 ? "," : "", a, nets->net[i].prefix);
		if (n >= sizeof(list))
			break;
	}
	setting("proxy", "%s", nets->n > 0 ? list : "none");
}

static void
print_settings(const struct check *ck, const struct pop3d_config *cf)
{
	const struct passwd *pw;
	const char	*apop = apop_file(cf);
	char		 spool[PATH_MAX];
	int		 fallback;

	setting("version", "%s", POP3D_VERSION);
	setting("uid", "%lu", (unsigned long)ck->euid);
	if (cf->auth.passwd_file != NULL) {
		setting("auth", "passwd-file");
		setting("passwd_file", "%s", cf->auth.passwd_file);
	} else {
		setting("auth", "pam");
		setting("pam_service", "%s", cf->auth.pam_service);
	}
	setting("apop_file", "%s", apop != NULL ? apop : "none");
	setting("mailbox", "%s", cf->auth.mailbox_template);
	if (spool_of(cf->auth.mailbox_template, spool, sizeof(spool)) == 0)
		setting("spool", "%s", spool);
	else
		setting("spool", "per-user");
	setting("state_dir", "%s", cf->state_dir);
	setting("rundir", "%s", cf->rundir);
	if (ck->as_root) {
		setting("chroot", "%s", cf->chroot_dir);
		pw = monitor_prelogin_pw(cf->prelogin_user, &fallback);
		setting("prelogin_user", "%s", pw == NULL ?
		    cf->prelogin_user : pw->pw_name);
	} else {
		setting("chroot", "none");
		setting("prelogin_user", "none");
	}
	setting("timeout", "%d", cf->timeout);
	setting("fail_delay_ms", "%d", cf->fail_delay_ms);
	setting("cleartext", "%s", cf->cleartext_protected ?
	    "protected-only" : "everywhere");
	setting("marked_protected", "%s", cf->marked_protected ? "yes" : "no");
	print_proxy_nets(&cf->proxy_nets);
	setting("dotlockfile", "%s", CONFCHECK_DOTLOCKFILE);
	setting("log", "%s", cf->log_stderr ? "stderr" : "syslog");
	setting("verbose", "%s", cf->verbose ? "yes" : "no");
}

/* PAM reads /etc/pam.d/SERVICE; a missing one falls to "other". */
static void
check_pam(struct check *ck, const char *service)
{
	struct stat	 sb;
	char		 path[PATH_MAX];
	int		 fd;

	if (*service == '\0' || strchr(service, '/') != NULL ||
	    strcmp(service, ".") == 0 || strcmp(service, "..") == 0) {
		problem(ck, "PAM service \"%s\": not a file name", service);
		return;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", PAM_DIR,
	    service) >= sizeof(path)) {
		problem(ck, "PAM service \"%s\": name too long", service);
		return;
	}
	/* Non-blocking: a FIFO planted there must not hang the check. */
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY |
	    O_CLOEXEC)) == -1) {
		problem(ck, "PAM service file %s: %s", path, strerror(errno));
		return;
	}
	if (fstat(fd, &sb) == -1)
		problem(ck, "PAM service file %s: %s", path, strerror(errno));
	else if (!S_ISREG(sb.st_mode) || sb.st_uid != 0 ||
	    (sb.st_mode & 022) != 0)
		problem(ck, "PAM service file %s: not a regular file of "
		    "root's writable only by root", path);
	close(fd);
}

/*
 * The password file is read by the checker process (root), or by pop3d
 * itself when it runs as a user.  It holds hashes: nobody else may read
 * it, and nobody but its owner write it.  Read by group is allowed, with
 * a warning: nothing of pop3d needs it.
 */
static void
check_passwd_file(struct check *ck, const char *path)
{
	struct stat	 sb;

	if (stat(path, &sb) == -1) {
		problem(ck, "password file %s: %s", path, strerror(errno));
		return;
	}
	if (!S_ISREG(sb.st_mode) || (sb.st_uid != 0 &&
	    (ck->as_root || sb.st_uid != ck->euid)) ||
	    (sb.st_mode & (S_IWGRP | S_IRWXO)) != 0) {
		problem(ck, "password file %s: not a regular file of %s "
		    "closed to others (chmod 600)", path,
		    ck->as_root ? "root's" : "root's or yours");
		return;
	}
	if (!ck->as_root && access(path, R_OK) == -1) {
		problem(ck, "password file %s: %s", path, strerror(errno));
		return;
	}
	if ((sb.st_mode & S_IRGRP) != 0)
		warning("password file %s: readable by its group (chmod 600)",
		    path);
}

/* auth.c's rule, and (for a pop3d that is not root) readable by us. */
static void
check_apop(struct check *ck, const char *path)
{
	struct stat	 sb;

	if (lstat(path, &sb) == -1) {
		problem(ck, "APOP secrets %s: %s", path, strerror(errno));
		return;
	}
	if (!auth_apop_safe(&sb)) {
		problem(ck, "APOP secrets %s: not a regular file owned by root "
		    "and closed to others (chmod 600)", path);
		return;
	}
	if (!ck->as_root && access(path, R_OK) == -1)
		problem(ck, "APOP secrets %s: %s", path, strerror(errno));
}

static void
check_prelogin_user(struct check *ck, const char *user)
{
	int	 fallback;

	if (monitor_prelogin_pw(user, &fallback) == NULL)
		problem(ck, "no unprivileged account \"%s\" for the pre-login "
		    "process", user);
	else if (fallback)
		warning("no account \"%s\" (make install creates it); the "
		    "pre-login process runs as nobody", user);
}

/*
 * Is a missing dir one pop3d can make (one mkdir: its parent exists, or
 * is the run directory, which is made first)?  0 or -1, with a problem.
 */
static int
creatable(struct check *ck, const char *what, const char *dir,
    const char *made_first)
{
	struct stat	 sb;
	char		 parent[PATH_MAX];

	parent_of(dir, parent, sizeof(parent));
	if (made_first != NULL && strcmp(parent, made_first) == 0)
		return 0;
	if (stat(parent, &sb) == -1) {
		problem(ck, "%s %s: cannot be created: %s: %s", what, dir,
		    parent, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb.st_mode)) {
		problem(ck, "%s %s: cannot be created: %s: not a directory",
		    what, dir, parent);
		return -1;
	}
	return 0;
}

/*
 * The run directory: made by the first session (0700), then it must be
 * a directory of pop3d's uid closed to others, as pop3d.c's
 * rundir_ready() requires.  Returns 1 when it exists, 0 when it will be
 * made.
 */
static int
check_rundir(struct check *ck, const char *dir)
{
	struct stat	 sb;

	if (lstat(dir, &sb) == -1) {
		if (errno == ENOENT) {
			(void)creatable(ck, "run directory", dir, NULL);
			return 0;
		}
		problem(ck, "run directory %s: %s", dir, strerror(errno));
		return 1;
	}
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != ck->euid ||
	    (sb.st_mode & 022) != 0)
		problem(ck, "run directory %s: not a directory of uid %lu "
		    "closed to others", dir, (unsigned long)ck->euid);
	return 1;
}

static void
check_chroot(struct check *ck, const char *dir, const char *rundir,
    int rundir_exists)
{
	struct stat	 sb;
	const char	*why;

	if (lstat(dir, &sb) == -1 && errno == ENOENT) {
		(void)creatable(ck, "pre-login chroot", dir,
		    rundir_exists ? NULL : rundir);
		return;
	}
	if (monitor_chroot_check(dir, &why) == -1)
		problem(ck, "pre-login chroot %s: %s", dir,
		    why != NULL ? why : strerror(errno));
}

/*
 * The spool directory, decided here (see pop3d.8, -n):
 * problems are what breaks a session or another user's mailbox: not a
 * directory; not root's; others cannot search it (a session has the
 * user's ids and no groups); others can write it without the sticky bit;
 * no dotlock can be made in it (neither writable by group mail, through
 * dotlockfile, nor world-writable and sticky).  Anything else that is
 * not Debian's root:mail 2775 is a warning: it works.
 */
static void
check_spool(struct check *ck, const char *tmpl)
{
	const struct group *gr;
	struct stat	 sb;
	char		 dir[PATH_MAX], sample[PATH_MAX];
	mode_t		 m;
	int		 by_group, by_all, before = ck->problems;

	if (auth_expand(tmpl, "user", "/home/user", sample,
	    sizeof(sample)) == -1) {
		problem(ck, "mailbox template \"%s\" gives no usable path",
		    tmpl);
		return;
	}
	if (spool_of(tmpl, dir, sizeof(dir)) == -1)
		return;		/* one directory each: nothing shared */
	if (stat(dir, &sb) == -1) {
		problem(ck, "spool %s: %s", dir, strerror(errno));
		return;
	}
	if (!S_ISDIR(sb.st_mode)) {
		problem(ck, "spool %s: not a directory", dir);
		return;
	}
	m = sb.st_mode & 07777;
	gr = getgrnam(MAIL_GROUP);
	by_group = gr != NULL && sb.st_gid == gr->gr_gid && (m & S_IWGRP);
	by_all = (m & S_IWOTH) && (m & S_ISVTX);
	if (sb.st_uid != 0)
		problem(ck, "spool %s: not owned by root (chown root:%s)", dir,
		    MAIL_GROUP);
	if ((m & S_IXOTH) == 0)
		problem(ck, "spool %s: users cannot reach their mailboxes "
		    "(chmod %04o)", dir, SPOOL_MODE);
	if ((m & S_IWOTH) && !(m & S_ISVTX))
		problem(ck, "spool %s: writable by all without the sticky "
		    "bit (chmod %04o)", dir, SPOOL_MODE);
	else if (!by_group && !by_all)
		problem(ck, "spool %s: no dotlock can be made there: not "
		    "writable by group %s (chown root:%s; chmod %04o)", dir,
		    MAIL_GROUP, MAIL_GROUP, SPOOL_MODE);
	if (ck->problems == before &&
	    (gr == NULL || sb.st_gid != gr->gr_gid || m != SPOOL_MODE))
		warning("spool %s: mode %04o, Debian's is root:%s %04o", dir,
		    (unsigned int)m, MAIL_GROUP, SPOOL_MODE);
}

/* The state directory: root makes each user's directory in it. */
static void
check_state_dir(struct check *ck, const char *dir)
{
	struct stat	 sb;

	if (stat(dir, &sb) == -1) {
		problem(ck, "state directory %s: %s (install -d -m 755 %s)",
		    dir, strerror(errno), dir);
		return;
	}
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != 0 || (sb.st_mode & 022) != 0)
		problem(ck, "state directory %s: not a directory of root's "
		    "closed to others (chown root:root; chmod 755)", dir);
}

static void
check_dotlockfile(struct check *ck)
{
	const struct group *gr;
	struct stat	 sb;
	const char	*path = CONFCHECK_DOTLOCKFILE;

	if (stat(path, &sb) == -1) {
		problem(ck, "liblockfile's helper %s: %s (apt-get install "
		    "liblockfile-bin)", path, strerror(errno));
		return;
	}
	gr = getgrnam(MAIL_GROUP);
	if (!S_ISREG(sb.st_mode) || sb.st_uid != 0 ||
	    (sb.st_mode & 022) != 0 || (sb.st_mode & S_ISGID) == 0 ||
	    (sb.st_mode & S_IXOTH) == 0 || gr == NULL ||
	    sb.st_gid != gr->gr_gid)
		problem(ck, "liblockfile's helper %s: not root's, setgid %s "
		    "and executable by all", path, MAIL_GROUP);
}

int
confcheck_run(const struct pop3d_config *cf)
{
	struct check	 ck;
	const char	*apop;
	int		 rundir_exists;

	memset(&ck, 0, sizeof(ck));
	ck.euid = geteuid();
	ck.as_root = ck.euid == 0;
	print_settings(&ck, cf);
	if (fflush(stdout) == EOF)
		return 1;

	if (cf->auth.passwd_file != NULL)
		check_passwd_file(&ck, cf->auth.passwd_file);
	else
		check_pam(&ck, cf->auth.pam_service);
	if ((apop = apop_file(cf)) != NULL)
		check_apop(&ck, apop);
	rundir_exists = check_rundir(&ck, cf->rundir);
	if (ck.as_root) {
		check_prelogin_user(&ck, cf->prelogin_user);
		check_chroot(&ck, cf->chroot_dir, cf->rundir, rundir_exists);
		check_state_dir(&ck, cf->state_dir);
	}
	check_spool(&ck, cf->auth.mailbox_template);
	check_dotlockfile(&ck);
	return ck.problems == 0 ? 0 : 1;
}
