/*
 * fault.c: an LD_PRELOAD shim for crash tests.  Counts the calls that
 * change files (write, pwrite, copy_file_range, fsync, fdatasync,
 * ftruncate on regular files; rename, renameat, unlink, unlinkat, link) and, at call FAULT_AT, either kills the
 * process (FAULT_MODE=kill, before the call runs) or makes the call fail
 * with ENOSPC, EIO or EDQUOT.  With FAULT_DIR set, only calls on paths
 * under that directory count.  FAULT_LOG, if set, gets one line per
 * counted call ("N name"), so a driver can learn how many points exist.
 * FAULT_NOCFR=1 makes every copy_file_range fail with EXDEV, uncounted,
 * as across file system types, so that the copy through user space runs.
 */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long	 counter;

/* Returns 0 to go on with the real call, or -1 with errno set. */
static int
point(const char *name)
{
	const char	*at = getenv("FAULT_AT"), *mode, *logf;
	long		 n = ++counter;
	int		 fd, e;

	if ((logf = getenv("FAULT_LOG")) != NULL) {
		char	 line[64];
		int	 len = snprintf(line, sizeof(line), "%ld %s\n", n, name);

		e = errno;
		if ((fd = open(logf, O_WRONLY | O_APPEND | O_CREAT, 0600)) != -1) {
			ssize_t w = syscall(SYS_write, fd, line, (size_t)len);
			(void)w;
			close(fd);
		}
		errno = e;
	}
	if (at == NULL || atol(at) != n)
		return 0;
	mode = getenv("FAULT_MODE");
	if (mode == NULL || strcmp(mode, "kill") == 0) {
		kill(getpid(), SIGKILL);
		pause();
	}
	errno = strcmp(mode, "eio") == 0 ? EIO :
	    strcmp(mode, "edquot") == 0 ? EDQUOT : ENOSPC;
	return -1;
}

/* Is path under FAULT_DIR (or is there no FAULT_DIR)? */
static int
watched(const char *path)
{
	const char	*dir = getenv("FAULT_DIR");

	return dir == NULL || strncmp(path, dir, strlen(dir)) == 0;
}

static int
watched_fd(int fd)
{
	char	 proc[64], path[4096];
	ssize_t	 n;

	if (getenv("FAULT_DIR") == NULL)
		return 1;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if ((n = readlink(proc, path, sizeof(path) - 1)) < 0)
		return 0;
	path[n] = '\0';
	return watched(path);
}

/* Is name, relative to directory dfd, under FAULT_DIR? */
static int
watched_at(int dfd, const char *name)
{
	char	 proc[64], path[4096];
	ssize_t	 n;

	if (dfd == AT_FDCWD || name[0] == '/')
		return watched(name);
	if (getenv("FAULT_DIR") == NULL)
		return 1;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", dfd);
	if ((n = readlink(proc, path, sizeof(path) - 1)) < 0)
		return 0;
	path[n] = '\0';
	return watched(path);
}

/*
 * Is fd a watched regular file?  The standard descriptors never are (the
 * client and the log), and they are looked at no further: the pre-login
 * process writes to them inside a seccomp filter that kills fstat().
 */
static int
is_file(int fd)
{
	struct stat	 sb;

	return fd > STDERR_FILENO && fstat(fd, &sb) == 0 &&
	    S_ISREG(sb.st_mode) && watched_fd(fd);
}

#define REAL(type, name, args) \
	static type (*real_##name) args; \
	if (real_##name == NULL) \
		real_##name = (type (*) args)dlsym(RTLD_NEXT, #name)

ssize_t
write(int fd, const void *buf, size_t len)
{
	REAL(ssize_t, write, (int, const void *, size_t));
	if (is_file(fd) && point("write") == -1)
		return -1;
	return real_write(fd, buf, len);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	REAL(ssize_t, pwrite, (int, const void *, size_t, off_t));
	if (is_file(fd) && point("pwrite") == -1)
		return -1;
	return real_pwrite(fd, buf, len, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	REAL(ssize_t, pwrite64, (int, const void *, size_t, off_t));
	if (is_file(fd) && point("pwrite") == -1)
		return -1;
	return real_pwrite64(fd, buf, len, off);
}

/* Counted by the file written to: the journal, or the mailbox. */
ssize_t
copy_file_range(int in, off64_t *inoff, int out, off64_t *outoff,
    size_t len, unsigned int flags)
{
	REAL(ssize_t, copy_file_range, (int, off64_t *, int, off64_t *,
	    size_t, unsigned int));
	if (getenv("FAULT_NOCFR") != NULL) {
		errno = EXDEV;
		return -1;
	}
	if (is_file(out) && point("copy_file_range") == -1)
		return -1;
	return real_copy_file_range(in, inoff, out, outoff, len, flags);
}

int
fsync(int fd)
{
	REAL(int, fsync, (int));
	if (watched_fd(fd) && point("fsync") == -1)
		return -1;
	return real_fsync(fd);
}

int
fdatasync(int fd)
{
	REAL(int, fdatasync, (int));
	if (watched_fd(fd) && point("fdatasync") == -1)
		return -1;
	return real_fdatasync(fd);
}

int
ftruncate(int fd, off_t len)
{
	REAL(int, ftruncate, (int, off_t));
	if (watched_fd(fd) && point("ftruncate") == -1)
		return -1;
	return real_ftruncate(fd, len);
}

int
ftruncate64(int fd, off_t len)
{
	REAL(int, ftruncate64, (int, off_t));
	if (watched_fd(fd) && point("ftruncate") == -1)
		return -1;
	return real_ftruncate64(fd, len);
}

int
rename(const char *a, const char *b)
{
	REAL(int, rename, (const char *, const char *));
	if ((watched(a) || watched(b)) && point("rename") == -1)
		return -1;
	return real_rename(a, b);
}

int
unlink(const char *p)
{
	REAL(int, unlink, (const char *));
	if (watched(p) && point("unlink") == -1)
		return -1;
	return real_unlink(p);
}

int
link(const char *a, const char *b)
{
	REAL(int, link, (const char *, const char *));
	if ((watched(a) || watched(b)) && point("link") == -1)
		return -1;
	return real_link(a, b);
}

int
renameat(int da, const char *a, int db, const char *b)
{
	REAL(int, renameat, (int, const char *, int, const char *));
	if ((watched_at(da, a) || watched_at(db, b)) &&
	    point("rename") == -1)
		return -1;
	return real_renameat(da, a, db, b);
}

int
unlinkat(int dfd, const char *p, int flags)
{
	REAL(int, unlinkat, (int, const char *, int));
	if (watched_at(dfd, p) && point("unlink") == -1)
		return -1;
	return real_unlinkat(dfd, p, flags);
}
