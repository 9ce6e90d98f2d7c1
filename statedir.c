/*
 * statedir.c: prepares DIR/ACCOUNT, the user's state directory (see
 * statedir.h).  Runs as root before the session drops to the user, and
 * in pop3d -r before it drops to the mailbox's owner; in the
 * single-process mode it runs as the user.
 *
 * Every step goes through descriptors: DIR is opened with O_NOFOLLOW and
 * checked with fstat, the subdirectory is made with mkdirat and opened
 * with openat(O_NOFOLLOW), and its owner and mode are set with fchown
 * and fchmod on that descriptor, only when this call made it.  Since
 * nobody but root (or, single-process, the user) may write DIR, nothing
 * can swap the subdirectory between the mkdirat and the openat; a user
 * controls nothing but their own subdirectory, and what they put there
 * is only ever checked, never trusted (mbox.c).
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "statedir.h"

/* A name that stays one component of a path: no '/', not "." or "..". */
static int
component_valid(const char *name)
{
	size_t	 len = strlen(name);

	return len > 0 && len <= NAME_MAX && auth_name_valid(name, len) &&
	    strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
	    strcmp(name, "..") != 0;
}

/* Single-process mode: makes dir and its missing parents, 0700. */
static int
mkdir_parents(const char *dir)
{
	char	 p[PATH_MAX];
	size_t	 i, len = strlen(dir);

	if (len >= sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(p, dir, len + 1);
	for (i = 1; i <= len; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		p[i] = '\0';
		if (mkdir(p, 0700) == -1 && errno != EEXIST)
			return -1;
		p[i] = dir[i];
	}
	return 0;
}

int
statedir_prepare(const char *dir, const char *account, uid_t uid, gid_t gid,
    char *path_r, size_t path_size)
{
	struct stat	 sb;
	uid_t		 me = geteuid();
	int		 dfd = -1, sfd = -1, made = 0, made_dir = 0;
	int		 ret = -1;

	if (!component_valid(account)) {
		log_warnx("state directory: \"%s\" is not a usable account "
		    "name", account);
		return -1;
	}
	if (*dir != '/' || (size_t)snprintf(path_r, path_size, "%s/%s", dir,
	    account) >= path_size) {
		log_warnx("state directory %s: not an absolute path that fits",
		    dir);
		return -1;
	}
	if (me == 0) {
		if (mkdir(dir, 0755) == 0)
			made_dir = 1;
		else if (errno != EEXIST) {
			log_warn("mkdir %s", dir);
			return -1;
		}
	} else if (mkdir_parents(dir) == -1) {
		log_warn("mkdir %s", dir);
		return -1;
	}
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1) {
		log_warn("state directory %s", dir);
		return -1;
	}
	/* Ours: searchable by the users, whatever the umask. */
	if (made_dir && fchmod(dfd, 0755) == -1) {
		log_warn("chmod %s", dir);
		goto done;
	}
	if (fstat(dfd, &sb) == -1) {
		log_warn("fstat %s", dir);
		goto done;
	}
	if ((sb.st_uid != 0 && sb.st_uid != me) || (sb.st_mode & 022) != 0) {
		log_warnx("state directory %s: owned by uid %lu, mode %04o; "
		    "it must be root's%s and closed to others' writes", dir,
		    (unsigned long)sb.st_uid,
		    (unsigned int)(sb.st_mode & 07777),
		    me == 0 ? "" : " or yours");
		goto done;
	}
	if (mkdirat(dfd, account, 0700) == 0)
		made = 1;
	else if (errno != EEXIST) {
		log_warn("mkdir %s", path_r);
		goto done;
	}
	if ((sfd = openat(dfd, account, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1) {
		if (errno == ELOOP || errno == ENOTDIR)
			log_warnx("%s: not a directory (a symlink?); refused",
			    path_r);
		else
			log_warn("open %s", path_r);
		goto done;
	}
	if (fstat(sfd, &sb) == -1) {
		log_warn("fstat %s", path_r);
		goto done;
	}
	/* Not root: made by the user, hence already the user's. */
	if (made && me == 0 && (sb.st_uid != uid || sb.st_gid != gid)) {
		if (fchown(sfd, uid, gid) == -1) {
			log_warn("chown %s", path_r);
			goto done;
		}
	}
	if (made && (sb.st_mode & 07777) != 0700 && fchmod(sfd, 0700) == -1) {
		log_warn("chmod %s", path_r);
		goto done;
	}
	if (made && fstat(sfd, &sb) == -1) {
		log_warn("fstat %s", path_r);
		goto done;
	}
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != uid ||
	    (sb.st_mode & 07777) != 0700) {
		log_warnx("%s: owned by uid %lu, mode %04o, not uid %lu's "
		    "with mode 0700; refused", path_r,
		    (unsigned long)sb.st_uid,
		    (unsigned int)(sb.st_mode & 07777), (unsigned long)uid);
		goto done;
	}
	ret = 0;
done:
	if (sfd != -1)
		close(sfd);
	close(dfd);
	return ret;
}
