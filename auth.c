/*
 * auth.c: checks credentials through PAM or a password file of crypt(3)
 * hashes (see auth.h).  Runs as root, before any mailbox is touched.
 */
#include <sys/types.h>

#include <sys/stat.h>

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <md5.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"

#define PASSWD_LINE_MAX	4096

/* Compares two strings in time that depends only on their lengths. */
static int
secure_streq(const char *a, const char *b)
{
	size_t		 la = strlen(a), lb = strlen(b), i;
	unsigned char	 d = la != lb;

	for (i = 0; i < la && i < lb; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

int
auth_name_valid(const char *name, size_t len)
{
	size_t	 i;

	if (len == 0 || len >= AUTH_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return 0;
	return 1;
}

int
auth_tally_open(const struct auth_tally *t)
{
	return t->fails < AUTH_MAX_FAILS && t->tempfails < AUTH_MAX_TEMPFAILS;
}

int
auth_tally_add(struct auth_tally *t, enum auth_status st)
{
	if (st == AUTH_FAIL)
		t->fails++;
	else if (st == AUTH_TEMPFAIL)
		t->tempfails++;
	return !auth_tally_open(t);
}

int
auth_expand(const char *tmpl, const char *name, const char *home, char *buf,
    size_t bufsize)
{
	const char	*p, *v;
	size_t		 n = 0, vl;
	char		 pct[2] = "%";

	if (strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0 || !auth_name_valid(name, strlen(name)))
		return -1;
	for (p = tmpl; *p != '\0'; p++) {
		if (*p != '%') {
			if (n + 1 >= bufsize)
				return -1;
			buf[n++] = *p;
			continue;
		}
		switch (*++p) {
		case 'u':
			v = name;
			break;
		case 'h':
			v = home;
			break;
		case '%':
			v = pct;
			break;
		default:
			return -1;
		}
		vl = strlen(v);
		if (n + vl >= bufsize)
			return -1;
		memcpy(buf + n, v, vl);
		n += vl;
	}
	buf[n] = '\0';
	return n > 0 && buf[0] == '/' ? 0 : -1;
}

/* Fills the system side of *u from the account's passwd entry. */
static enum auth_status
lookup_account(const char *account, struct auth_user *u)
{
	struct passwd	*pw;

	errno = 0;
	if ((pw = getpwnam(account)) == NULL) {
		/* "Not found" may come with any errno; these mean "broken". */
		if (errno == EIO || errno == ENOMEM || errno == EMFILE ||
		    errno == ENFILE || errno == EINTR) {
			log_warn("getpwnam");
			return AUTH_TEMPFAIL;
		}
		log_warnx("no system account \"%s\"", account);
		return AUTH_FAIL;
	}
	if (strlen(pw->pw_name) >= sizeof(u->account))
		return AUTH_FAIL;
	strcpy(u->account, pw->pw_name);
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	return AUTH_OK;
}

static enum auth_status
set_mailbox(const struct auth_config *cf, const char *tmpl,
    struct auth_user *u)
{
	struct passwd	*pw;
	const char	*home = "";

	if ((pw = getpwnam(u->account)) != NULL && pw->pw_dir != NULL)
		home = pw->pw_dir;
	if (tmpl == NULL || *tmpl == '\0')
		tmpl = cf->mailbox_template;
	if (auth_expand(tmpl, u->name, home, u->mailbox,
	    sizeof(u->mailbox)) == -1) {
		log_warnx("mailbox template \"%s\" gives no usable path", tmpl);
		return AUTH_FAIL;
	}
	return AUTH_OK;
}

/* ---- PAM ----------------------------------------------------------- */

static void
free_responses(struct pam_response *r, int n)
{
	int	 i;

	if (r == NULL)
		return;
	for (i = 0; i < n; i++)
		if (r[i].resp != NULL) {
			explicit_bzero(r[i].resp, strlen(r[i].resp));
			free(r[i].resp);
		}
	free(r);
}

/* Answers password prompts with the password, name prompts with the name. */
static int
conv(int n, const struct pam_message **msg, struct pam_response **resp_r,
    void *arg)
{
	const struct auth_request *req = arg;
	struct pam_response *r;
	int		 i;

	*resp_r = NULL;
	if (n <= 0 || n > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	if ((r = calloc((size_t)n, sizeof(*r))) == NULL)
		return PAM_BUF_ERR;
	for (i = 0; i < n; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
			r[i].resp = strdup(req->pass);
			break;
		case PAM_PROMPT_ECHO_ON:
			r[i].resp = strdup(req->user);
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			log_debug("PAM says: %s", msg[i]->msg);
			continue;
		default:
			free_responses(r, n);
			return PAM_CONV_ERR;
		}
		if (r[i].resp == NULL) {
			free_responses(r, n);
			return PAM_BUF_ERR;
		}
	}
	*resp_r = r;
	return PAM_SUCCESS;
}

static enum auth_status
check_pam(const struct auth_config *cf, struct auth_request *req,
    struct auth_user *u)
{
	struct pam_conv	 pc = { conv, req };
	pam_handle_t	*pamh = NULL;
	const void	*item;
	enum auth_status st = AUTH_FAIL;
	int		 r;

	r = pam_start(cf->pam_service, req->user, &pc, &pamh);
	if (r != PAM_SUCCESS) {
		log_warnx("pam_start: %s", pam_strerror(pamh, r));
		return AUTH_TEMPFAIL;
	}
	if ((r = pam_set_item(pamh, PAM_RHOST, cf->rhost)) != PAM_SUCCESS ||
	    (r = pam_set_item(pamh, PAM_TTY, "pop3")) != PAM_SUCCESS) {
		log_warnx("pam_set_item: %s", pam_strerror(pamh, r));
		st = AUTH_TEMPFAIL;
		goto done;
	}
	r = pam_authenticate(pamh, PAM_DISALLOW_NULL_AUTHTOK);
	if (r == PAM_SUCCESS)
		r = pam_acct_mgmt(pamh, PAM_DISALLOW_NULL_AUTHTOK);
	if (r != PAM_SUCCESS) {
		log_debug("pam: %s", pam_strerror(pamh, r));
		/* Modules rarely say "unknown user": ask the system. */
		u->known = r != PAM_USER_UNKNOWN && getpwnam(req->user) != NULL;
		if (r == PAM_BUF_ERR || r == PAM_SYSTEM_ERR ||
		    r == PAM_AUTHINFO_UNAVAIL)
			st = AUTH_TEMPFAIL;
		goto done;
	}
	/* A module may have mapped the name. */
	if ((r = pam_get_item(pamh, PAM_USER, &item)) != PAM_SUCCESS ||
	    item == NULL || strlen(item) >= sizeof(u->name))
		goto done;
	strcpy(u->name, item);
	if ((st = lookup_account(u->name, u)) == AUTH_OK)
		st = set_mailbox(cf, NULL, u);
done:
	pam_end(pamh, r);
	return st;
}

/* ---- the password file --------------------------------------------- */

int
auth_apop_safe(const struct stat *sb)
{
	return S_ISREG(sb->st_mode) && sb->st_uid == 0 &&
	    (sb->st_mode & (S_IRWXG | S_IRWXO)) == 0;
}

/*
 * Opens a file of secrets.  With private, it must be a regular file owned
 * by root that nobody else may read or write, and it is checked on the
 * descriptor it is read from (no symlink is followed), so that it cannot
 * be swapped between the check and the read.  Returns NULL (logged).
 */
static FILE *
secrets_open(const char *file, int private)
{
	struct stat	 sb;
	FILE		*fp;
	int		 fd;

	fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK |
	    (private ? O_NOFOLLOW : 0));
	if (fd == -1 && !(private && errno == ELOOP)) {
		log_warn(private ? "APOP secrets %s" : "open %s", file);
		return NULL;
	}
	if (private && (fd == -1 || fstat(fd, &sb) == -1 ||
	    !auth_apop_safe(&sb))) {
		log_warnx("APOP secrets %s: not a regular file owned by root "
		    "and closed to others (chmod 600); APOP disabled", file);
		if (fd != -1)
			close(fd);
		return NULL;
	}
	if ((fp = fdopen(fd, "r")) == NULL) {
		log_warn("%s", file);
		close(fd);
	}
	return fp;
}

/*
 * Finds name's entry: "name:hash:account:mailbox", '#' comments.  Copies
 * the fields into line (which they point into) and returns 1, 0 when
 * there is none, -1 on error.  private: see secrets_open().
 */
static int
passwd_find(const char *file, int private, const char *name, char *line,
    size_t linesize, char **fields, int nfields)
{
	FILE	*fp;
	char	*p, *f;
	int	 i, found = 0;

	if ((fp = secrets_open(file, private)) == NULL)
		return -1;
	while (!found && fgets(line, (int)linesize, fp) != NULL) {
		if ((p = strchr(line, '\n')) == NULL && !feof(fp)) {
			log_warnx("%s: line too long, ignored", file);
			while ((i = fgetc(fp)) != EOF && i != '\n')
				;
			continue;
		}
		if (p != NULL)
			*p = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		p = line;
		for (i = 0; i < nfields; i++) {
			f = strsep(&p, ":");
			fields[i] = f != NULL ? f : (char *)"";
		}
		if (strcmp(fields[0], name) == 0)
			found = 1;
	}
	if (!found)
		explicit_bzero(line, linesize);
	if (ferror(fp)) {
		log_warn("read %s", file);
		found = -1;
	}
	fclose(fp);
	return found;
}

static enum auth_status
check_passwd_file(const struct auth_config *cf, struct auth_request *req,
    struct auth_user *u)
{
	struct crypt_data *cd;
	char		 line[PASSWD_LINE_MAX], dummy[CRYPT_GENSALT_OUTPUT_SIZE];
	char		*fields[4], *out;
	const char	*hash;
	enum auth_status st = AUTH_FAIL;
	int		 found;

	found = passwd_find(cf->passwd_file, 0, req->user, line, sizeof(line),
	    fields, 4);
	if (found < 0)
		return AUTH_TEMPFAIL;
	if ((cd = calloc(1, sizeof(*cd))) == NULL)
		return AUTH_TEMPFAIL;
	hash = found ? fields[1] : NULL;
	u->known = found;
	if (hash == NULL || *hash == '\0' || *hash == '*' || *hash == '!') {
		/* Do the work a real hash would cost, then fail. */
		if (crypt_gensalt_rn(NULL, 0, NULL, 0, dummy,
		    sizeof(dummy)) != NULL)
			(void)crypt_rn(req->pass, dummy, cd, sizeof(*cd));
		found = 0;
	} else {
		out = crypt_rn(req->pass, hash, cd, sizeof(*cd));
		if (out == NULL || out[0] == '*' || !secure_streq(out, hash))
			found = 0;
	}
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	if (found) {
		if (strlen(req->user) < sizeof(u->name))
			strcpy(u->name, req->user);
		if ((st = lookup_account(fields[2], u)) == AUTH_OK)
			st = set_mailbox(cf, fields[3], u);
	}
	explicit_bzero(line, sizeof(line));
	return st;
}

/* ---- APOP (RFC 1939 section 7) ------------------------------------ */

int
auth_apop_usable(const char *path)
{
	FILE	*fp;

	if ((fp = secrets_open(path, 1)) == NULL)
		return -1;
	fclose(fp);
	return 0;
}

void
auth_apop_digest(const char *stamp, const char *secret,
    char out[AUTH_APOP_DIGEST + 1])
{
	MD5_CTX		 ctx;

	MD5Init(&ctx);
	MD5Update(&ctx, (const unsigned char *)stamp, strlen(stamp));
	MD5Update(&ctx, (const unsigned char *)secret, strlen(secret));
	(void)MD5End(&ctx, out);
	explicit_bzero(&ctx, sizeof(ctx));
}

/*
 * Finds name's APOP secret; 1 found, 0 none, -1 error.  The file is
 * checked again here: it may have changed since startup.
 */
static int
apop_secret(const struct auth_config *cf, const char *name, char *line,
    size_t linesize, char **secret_r)
{
	char	*fields[2];
	int	 found;

	if (cf->apop_file == NULL)
		return 0;
	found = passwd_find(cf->apop_file, 1, name, line, linesize, fields, 2);
	if (found == 1)
		*secret_r = fields[1];
	return found;
}

static enum auth_status
check_apop(const struct auth_config *cf, struct auth_request *req,
    struct auth_user *u)
{
	char		 line[PASSWD_LINE_MAX], want[AUTH_APOP_DIGEST + 1];
	char		*secret = NULL;
	enum auth_status st = AUTH_FAIL;
	int		 found;

	if (cf->apop_stamp == NULL)
		return AUTH_FAIL;
	found = apop_secret(cf, req->user, line, sizeof(line), &secret);
	if (found < 0)
		return AUTH_TEMPFAIL;
	/* An unknown user costs the same: compare against a dummy. */
	auth_apop_digest(cf->apop_stamp, found ? secret : "-", want);
	if (secure_streq(want, req->pass) && found == 1 && *secret != '\0') {
		u->known = 1;
		if (strlen(req->user) < sizeof(u->name))
			strcpy(u->name, req->user);
		/* APOP users are system users, or passwd-file users. */
		if (cf->passwd_file != NULL) {
			char	 pl[PASSWD_LINE_MAX], *f[4];

			if (passwd_find(cf->passwd_file, 0, req->user, pl,
			    sizeof(pl), f, 4) == 1 &&
			    (st = lookup_account(f[2], u)) == AUTH_OK)
				st = set_mailbox(cf, f[3], u);
			else if (st == AUTH_OK)
				st = AUTH_FAIL;
			explicit_bzero(pl, sizeof(pl));
		} else if ((st = lookup_account(req->user, u)) == AUTH_OK)
			st = set_mailbox(cf, NULL, u);
	} else
		u->known = found == 1;
	explicit_bzero(want, sizeof(want));
	explicit_bzero(line, sizeof(line));
	return st;
}

/*
 * RFC 1939 section 13: who has an APOP secret may not send a password.
 * 1 yes, 0 no, -1 the secrets cannot be read (then nobody may: we cannot
 * tell who has one).
 */
static int
has_apop_secret(const struct auth_config *cf, const char *name)
{
	char	 line[PASSWD_LINE_MAX], *secret;
	int	 found;

	found = apop_secret(cf, name, line, sizeof(line), &secret);
	explicit_bzero(line, sizeof(line));
	return found;
}

enum auth_status
auth_check(const struct auth_config *cf, struct auth_request *req,
    struct auth_user *user_r)
{
	enum auth_status st;
	int		 found;

	memset(user_r, 0, sizeof(*user_r));
	req->user[sizeof(req->user) - 1] = '\0';
	req->pass[sizeof(req->pass) - 1] = '\0';
	if (req->kind == AUTH_KIND_APOP)
		st = check_apop(cf, req, user_r);
	else if (req->kind != AUTH_KIND_PASS)
		st = AUTH_FAIL;
	else if ((found = has_apop_secret(cf, req->user)) == 1) {
		log_notice("%s has an APOP secret: password login refused",
		    req->user);
		user_r->known = 1;
		st = AUTH_FAIL;
	} else if (found == -1)
		st = AUTH_TEMPFAIL;
	else if (cf->passwd_file != NULL)
		st = check_passwd_file(cf, req, user_r);
	else
		st = check_pam(cf, req, user_r);
	explicit_bzero(req->pass, sizeof(req->pass));
	return st;
}

enum auth_status
auth_login(const struct auth_config *cf, int as_root, struct auth_request *req,
    struct auth_user *user_r)
{
	enum auth_status st;

	st = auth_check(cf, req, user_r);
	if (st == AUTH_OK)
		user_r->known = 1;
	if (st == AUTH_OK && !as_root && user_r->uid != getuid()) {
		log_warnx("%s: not running as root, so only uid %lu can be "
		    "served", user_r->name, (unsigned long)getuid());
		st = AUTH_FAIL;
	} else if (st == AUTH_OK && user_r->uid == 0) {
		log_warnx("%s: refusing to serve a mailbox as uid 0",
		    user_r->name);
		st = AUTH_FAIL;
	}
	return st;
}

void
auth_log_result(enum auth_status st, const struct auth_user *u,
    const char *name, const char *peer)
{
	if (st == AUTH_OK)
		log_info("login ok: %s from %s", u->name, peer);
	else if (st == AUTH_TEMPFAIL)
		log_warnx("login failed from %s: authentication unavailable",
		    peer);
	else if (u->known)
		log_notice("login failed: %s from %s", name, peer);
	else
		log_notice("login failed: unknown user from %s", peer);
}

void
auth_fail_delay(const struct timespec *start, int ms)
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
