/*
 * testutil.h: small helpers shared by the cmocka unit tests.  Everything
 * is static inline so that each test program stays one translation unit
 * and unused helpers cost no warning.
 */
#ifndef POP3D_TESTUTIL_H
#define POP3D_TESTUTIL_H

#include <sys/socket.h>

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A growable byte buffer. */
struct tu_buf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

static inline void
tu_buf_add(struct tu_buf *b, const void *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap == 0 ? 256 : b->cap;

		while (b->len + len + 1 > cap)
			cap *= 2;
		if ((b->p = realloc(b->p, cap)) == NULL)
			abort();
		b->cap = cap;
	}
	if (len > 0)
		memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
}

static inline void
tu_buf_str(struct tu_buf *b, const char *s)
{
	tu_buf_add(b, s, strlen(s));
}

static inline void
tu_buf_free(struct tu_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* Reads a whole file; NULL when it cannot be opened.  NUL-terminated. */
static inline char *
tu_read_file(const char *path, size_t *len_r)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	char		 chunk[8192];
	ssize_t		 n;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	tu_buf_add(&b, "", 0);
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			tu_buf_free(&b);
			return NULL;
		}
		tu_buf_add(&b, chunk, (size_t)n);
	}
	close(fd);
	*len_r = b.len;
	return b.p;
}

/* Reads everything from an open fd, from offset 0. */
static inline char *
tu_read_fd(int fd, size_t *len_r)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	char		 chunk[8192];
	ssize_t		 n;
	off_t		 off = 0;

	tu_buf_add(&b, "", 0);
	while ((n = pread(fd, chunk, sizeof(chunk), off)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			abort();
		}
		tu_buf_add(&b, chunk, (size_t)n);
		off += n;
	}
	*len_r = b.len;
	return b.p;
}

/* Everything waiting on a socket now, without blocking; NUL-terminated. */
static inline char *
tu_drain(int fd, size_t *len_r)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	char		 chunk[4096];
	ssize_t		 n;

	tu_buf_add(&b, "", 0);
	for (;;) {
		n = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
		if (n > 0) {
			tu_buf_add(&b, chunk, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	*len_r = b.len;
	return b.p;
}

static inline int
tu_write_file(const char *path, const void *data, size_t len)
{
	const char	*p = data;
	ssize_t		 n;
	int		 fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1)
		return -1;
	while (len > 0) {
		if ((n = write(fd, p, len)) < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return close(fd);
}

static inline int
tu_is_dir(const char *path)
{
	struct stat	 sb;

	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/*
 * The fixture directory: $FIXTURES, else tests/fixtures under the cwd
 * (make check runs from the repository root), else ../fixtures next to
 * the executable.
 */
static inline const char *
tu_fixtures_dir(void)
{
	static char	 dir[PATH_MAX];
	const char	*env = getenv("FIXTURES");
	char		 exe[PATH_MAX], *slash;
	ssize_t		 n;

	if (env != NULL && *env != '\0')
		return env;
	if (tu_is_dir("tests/fixtures"))
		return "tests/fixtures";
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL) {
			*slash = '\0';
			if ((size_t)snprintf(dir, sizeof(dir), "%s/../fixtures",
			    exe) < sizeof(dir) && tu_is_dir(dir))
				return dir;
		}
	}
	return "tests/fixtures";
}

/* A scratch directory for one test program; removed by tu_rmdir_all. */
static inline char *
tu_mkdtemp(void)
{
	const char	*tmp = getenv("TMPDIR");
	char		*d;

	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	if (asprintf(&d, "%s/pop3d-unit-XXXXXX", tmp) == -1)
		abort();
	if (mkdtemp(d) == NULL)
		abort();
	return d;
}

/*
 * The bytes POP3 puts on the wire for a message given as CRLF lines:
 * dot-stuffed, then ".\r\n".
 */
static inline char *
tu_stuff(const char *msg, size_t len, size_t *len_r)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	size_t		 i;
	int		 bol = 1;

	tu_buf_add(&b, "", 0);
	for (i = 0; i < len; i++) {
		if (bol && msg[i] == '.')
			tu_buf_add(&b, ".", 1);
		tu_buf_add(&b, msg + i, 1);
		bol = msg[i] == '\n';
	}
	tu_buf_add(&b, ".\r\n", 3);
	*len_r = b.len;
	return b.p;
}

/*
 * What TOP sends for a message given as CRLF lines (before stuffing):
 * the header, the empty line after it and max_body_lines lines; all of a
 * message without an empty line.  Returns the length of that prefix.
 */
static inline size_t
tu_top_len(const char *msg, size_t len, int64_t max_body_lines)
{
	size_t	 i = 0, eol;
	int	 in_header = 1;
	int64_t	 left = max_body_lines;

	if (max_body_lines < 0)
		return len;
	while (i < len) {
		const char *lf = memchr(msg + i, '\n', len - i);

		eol = lf == NULL ? len : (size_t)(lf - msg) + 1;
		if (in_header) {
			if (eol - i == 2 && msg[i] == '\r')
				in_header = 0;
		} else
			left--;
		i = eol;
		if (!in_header && left <= 0)
			break;
	}
	return i;
}

#endif
