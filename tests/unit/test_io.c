/*
 * test_io.c: the bounded line reader, the wiping of credential bytes and
 * the body writer (io.h), over a socketpair.
 */
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "io.h"
#include "testutil.h"

#define LINE_MAX_POP3	255	/* octets, CRLF included */

struct pair {
	int		 sv[2];	/* sv[0]: the io's side; sv[1]: the peer */
	struct io	*io;
};

static int
pair_setup(void **state)
{
	struct pair	*p = calloc(1, sizeof(*p));

	assert_non_null(p);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
	    p->sv), 0);
	p->io = io_new(p->sv[0], p->sv[0], 5);
	assert_non_null(p->io);
	*state = p;
	return 0;
}

static int
pair_teardown(void **state)
{
	struct pair	*p = *state;

	io_free(p->io);
	close(p->sv[0]);
	if (p->sv[1] != -1)
		close(p->sv[1]);
	free(p);
	return 0;
}

/* The peer sends bytes (small enough for the socket buffer). */
static void
peer_send(struct pair *p, const void *buf, size_t len)
{
	const char	*c = buf;
	ssize_t		 n;

	while (len > 0) {
		n = write(p->sv[1], c, len);
		assert_true(n > 0);
		c += n;
		len -= (size_t)n;
	}
}

static void
peer_close(struct pair *p)
{
	assert_int_equal(shutdown(p->sv[1], SHUT_WR), 0);
}

/* Everything the io has sent so far (after io_flush). */
static char *
peer_recv(struct pair *p, size_t *len_r)
{
	return tu_drain(p->sv[1], len_r);
}

static enum io_status
getline_pop3(struct pair *p, char *buf, size_t *len_r)
{
	return io_getline(p->io, buf, LINE_MAX_POP3 + 1, LINE_MAX_POP3,
	    len_r);
}

static void
expect_line(struct pair *p, const char *want, size_t want_len)
{
	char	 buf[LINE_MAX_POP3 + 1];
	size_t	 len = 9999;

	assert_int_equal(getline_pop3(p, buf, &len), IO_OK);
	assert_int_equal(len, want_len);
	assert_memory_equal(buf, want, want_len);
	assert_int_equal(buf[len], '\0');
}

static void
expect_status(struct pair *p, enum io_status want)
{
	char	 buf[LINE_MAX_POP3 + 1];
	size_t	 len;

	assert_int_equal(getline_pop3(p, buf, &len), want);
}

/* A line of n octets: n - 2 'x' then CRLF (or n - 1 and LF). */
static char *
make_line(size_t n, int crlf)
{
	char	*l = malloc(n + 1);

	memset(l, 'x', n);
	if (crlf) {
		l[n - 2] = '\r';
		l[n - 1] = '\n';
	} else
		l[n - 1] = '\n';
	l[n] = '\0';
	return l;
}

/* ---- the line reader ------------------------------------------------ */

static void
test_getline_basic(void **state)
{
	struct pair	*p = *state;

	peer_send(p, "USER a\r\nbare lf\nPASS  x y \r\n\r\n\n", 32);
	expect_line(p, "USER a", 6);
	expect_line(p, "bare lf", 7);
	expect_line(p, "PASS  x y ", 10);
	expect_line(p, "", 0);
	expect_line(p, "", 0);
	peer_close(p);
	expect_status(p, IO_EOF);
}

/* Only the CR right before LF is stripped; NULs are returned. */
static void
test_getline_cr_nul(void **state)
{
	struct pair	*p = *state;

	peer_send(p, "a\rb\r\r\n\0x\0\r\n", 11);
	expect_line(p, "a\rb\r", 4);
	expect_line(p, "\0x\0", 3);
}

static void
test_getline_limits(void **state)
{
	struct pair	*p = *state;
	char		*l255 = make_line(255, 1), *l256 = make_line(256, 1),
			*l255lf = make_line(255, 0), *l256lf = make_line(256, 0);

	peer_send(p, l255, 255);
	peer_send(p, "next\r\n", 6);
	peer_send(p, l256, 256);
	peer_send(p, "after\r\n", 7);
	peer_send(p, l255lf, 255);
	peer_send(p, l256lf, 256);
	peer_send(p, "last\n", 5);
	expect_line(p, l255, 253);
	expect_line(p, "next", 4);
	expect_status(p, IO_TOOLONG);
	expect_line(p, "after", 5);
	expect_line(p, l255lf, 254);
	expect_status(p, IO_TOOLONG);
	expect_line(p, "last", 4);
	free(l255);
	free(l256);
	free(l255lf);
	free(l256lf);
}

/*
 * A 1 MB line without a newline, then a newline and a normal line: one
 * IO_TOOLONG, then the line.  A child writes it, so the reader must drain
 * as it goes (the socket holds far less than 1 MB): memory stays bounded
 * by the io's fixed buffer.
 */
static void
test_getline_huge(void **state)
{
	struct pair	*p = *state;
	const void	*pend;
	pid_t		 pid;
	int		 status;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static char	 big[65536];
		size_t		 sent = 0;
		ssize_t		 n;

		memset(big, 'A', sizeof(big));
		close(p->sv[0]);
		while (sent < 1024 * 1024) {
			n = write(p->sv[1], big, sizeof(big));
			if (n <= 0)
				_exit(1);
			sent += (size_t)n;
		}
		if (write(p->sv[1], "\r\nnormal line\r\n", 15) != 15)
			_exit(1);
		_exit(0);
	}
	close(p->sv[1]);
	p->sv[1] = -1;
	expect_status(p, IO_TOOLONG);
	assert_true(io_pending(p->io, &pend) <= IO_INBUF_SIZE);
	expect_line(p, "normal line", 11);
	expect_status(p, IO_EOF);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void
test_getline_eof_midline(void **state)
{
	struct pair	*p = *state;

	peer_send(p, "whole\r\npartial", 14);
	peer_close(p);
	expect_line(p, "whole", 5);
	expect_status(p, IO_EOF);
}

static void
test_getline_eof_midline_toolong(void **state)
{
	struct pair	*p = *state;
	char		*l = make_line(600, 0);

	peer_send(p, l, 599);	/* no newline */
	peer_close(p);
	expect_status(p, IO_EOF);
	free(l);
}

/* The single 1-second test: nobody writes. */
static void
test_getline_timeout(void **state)
{
	struct pair	*p = *state;
	struct io	*io;
	char		 buf[LINE_MAX_POP3 + 1];
	size_t		 len;
	time_t		 t0;

	io = io_new(p->sv[0], p->sv[0], 1);
	assert_non_null(io);
	t0 = time(NULL);
	assert_int_equal(io_getline(io, buf, sizeof(buf), LINE_MAX_POP3,
	    &len), IO_TIMEOUT);
	assert_true(time(NULL) - t0 <= 3);
	io_free(io);
}

/* Buffered output leaves before the reader waits for input. */
static void
test_getline_flushes(void **state)
{
	struct pair	*p = *state;
	char		*got;
	size_t		 len;

	assert_int_equal(io_write(p->io, "+OK hello\r\n", 11), IO_OK);
	assert_int_equal(io_printf(p->io, "+OK %d %s\r\n", 42, "x"), IO_OK);
	got = peer_recv(p, &len);
	assert_int_equal(len, 0);	/* still buffered */
	free(got);
	peer_send(p, "QUIT\r\n", 6);
	expect_line(p, "QUIT", 4);
	got = peer_recv(p, &len);
	assert_int_equal(len, 21);
	assert_memory_equal(got, "+OK hello\r\n+OK 42 x\r\n", 21);
	free(got);
}

static void
test_preload(void **state)
{
	struct pair	*p = *state;
	const void	*pend;
	size_t		 n;

	peer_send(p, "C\r\n", 3);
	assert_int_equal(io_pending(p->io, &pend), 0);
	assert_int_equal(io_preload(p->io, "A\r\nB\n", 5), 0);
	n = io_pending(p->io, &pend);
	assert_int_equal(n, 5);
	assert_memory_equal(pend, "A\r\nB\n", 5);
	expect_line(p, "A", 1);
	n = io_pending(p->io, &pend);
	assert_int_equal(n, 2);
	assert_memory_equal(pend, "B\n", 2);
	expect_line(p, "B", 1);
	expect_line(p, "C", 1);
	assert_int_equal(io_pending(p->io, &pend), 0);
}

/* Preloaded input goes before input already buffered but not yet read. */
static void
test_preload_before_buffered(void **state)
{
	struct pair	*p = *state;
	const void	*pend;
	size_t		 n;

	peer_send(p, "1\r\n2\r\n3\r\n", 9);
	expect_line(p, "1", 1);
	n = io_pending(p->io, &pend);
	assert_int_equal(n, 6);
	assert_memory_equal(pend, "2\r\n3\r\n", 6);
	assert_int_equal(io_preload(p->io, "0\r\n", 3), 0);
	n = io_pending(p->io, &pend);
	assert_int_equal(n, 9);
	assert_memory_equal(pend, "0\r\n2\r\n3\r\n", 9);
	expect_line(p, "0", 1);
	expect_line(p, "2", 1);
	expect_line(p, "3", 1);
}

static void
test_preload_full(void **state)
{
	struct pair	*p = *state;
	static char	 big[IO_INBUF_SIZE + 1];
	const void	*pend;

	memset(big, 'x', sizeof(big));
	errno = 0;
	assert_int_equal(io_preload(p->io, big, sizeof(big)), -1);
	assert_int_equal(errno, ENOBUFS);
	assert_int_equal(io_pending(p->io, &pend), 0);
	assert_int_equal(io_preload(p->io, big, IO_INBUF_SIZE - 3), 0);
	assert_int_equal(io_preload(p->io, "abc", 3), 0);
	assert_int_equal(io_preload(p->io, "d", 1), -1);
	assert_int_equal(io_pending(p->io, &pend), IO_INBUF_SIZE);
}

/* io_printf refuses what does not fit its line rather than cutting it. */
static void
test_printf_overflow(void **state)
{
	struct pair	*p = *state;
	char		 big[2000], *got;
	size_t		 len;

	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(io_printf(p->io, "%s", big), IO_ERROR);
	assert_int_equal(io_flush(p->io), IO_OK);
	got = peer_recv(p, &len);
	assert_int_equal(len, 0);
	free(got);
}

/* A large write goes out whole (more than the output buffer). */
static void
test_write_large(void **state)
{
	struct pair	*p = *state;
	pid_t		 pid;
	int		 status, pfd[2];
	size_t		 total = 3 * IO_OUTBUF_SIZE + 17, i;
	char		*data;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Count and check what arrives, report through the pipe. */
		char		 buf[8192];
		size_t		 got = 0, bad = 0, k;
		ssize_t		 n;

		close(pfd[0]);
		while ((n = read(p->sv[1], buf, sizeof(buf))) > 0) {
			for (k = 0; k < (size_t)n; k++)
				if (buf[k] != (char)('a' + (got + k) % 23))
					bad++;
			got += (size_t)n;
		}
		(void)dprintf(pfd[1], "%zu %zu", got, bad);
		_exit(0);
	}
	close(pfd[1]);
	data = malloc(total);
	for (i = 0; i < total; i++)
		data[i] = (char)('a' + i % 23);
	assert_int_equal(io_write(p->io, data, total), IO_OK);
	assert_int_equal(io_flush(p->io), IO_OK);
	free(data);
	close(p->sv[1]);
	p->sv[1] = -1;
	assert_int_equal(shutdown(p->sv[0], SHUT_WR), 0);
	{
		char	 res[64] = "";
		size_t	 got, bad;

		assert_true(read(pfd[0], res, sizeof(res) - 1) > 0);
		assert_int_equal(sscanf(res, "%zu %zu", &got, &bad), 2);
		assert_int_equal(got, total);
		assert_int_equal(bad, 0);
	}
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
}

/* ---- the body writer ------------------------------------------------ */

/* Feeds in through the body writer in the given chunks; returns output. */
static char *
body_run(struct pair *p, const char *in, size_t len, int64_t max,
    const size_t *cuts, size_t ncuts, size_t *out_len)
{
	struct io_body	 b;
	size_t		 off = 0, i, end;

	io_body_begin(&b, max);
	for (i = 0; i <= ncuts; i++) {
		end = i < ncuts ? cuts[i] : len;
		assert_int_equal(io_body_write(p->io, &b, in + off, end - off),
		    IO_OK);
		off = end;
	}
	assert_int_equal(io_body_end(p->io, &b), IO_OK);
	assert_int_equal(io_body_dot(p->io), IO_OK);
	assert_int_equal(io_flush(p->io), IO_OK);
	return peer_recv(p, out_len);
}

static char *
body_whole(struct pair *p, const char *in, size_t len, int64_t max,
    size_t *out_len)
{
	return body_run(p, in, len, max, NULL, 0, out_len);
}

static void
expect_body(struct pair *p, const char *in, size_t len, int64_t max,
    const char *want, size_t want_len)
{
	char	*got;
	size_t	 got_len;

	got = body_whole(p, in, len, max, &got_len);
	if (got_len != want_len || memcmp(got, want, want_len) != 0)
		fail_msg("body of %zu bytes, max %lld: got %zu bytes, want "
		    "%zu", len, (long long)max, got_len, want_len);
	free(got);
}

#define EXPECT_BODY(p, in, max, want) \
	expect_body(p, in, sizeof(in) - 1, max, want, sizeof(want) - 1)

static void
test_body_basic(void **state)
{
	struct pair	*p = *state;

	EXPECT_BODY(p, "", -1, ".\r\n");
	EXPECT_BODY(p, "a\nb\n", -1, "a\r\nb\r\n.\r\n");
	EXPECT_BODY(p, "a\r\nb\r\n", -1, "a\r\nb\r\n.\r\n");
	EXPECT_BODY(p, "a\r\nb\n\r\n\n", -1, "a\r\nb\r\n\r\n\r\n.\r\n");
	/* A lone CR is content; CR CR LF keeps one CR. */
	EXPECT_BODY(p, "a\rb\n", -1, "a\rb\r\n.\r\n");
	EXPECT_BODY(p, "\rx\n", -1, "\rx\r\n.\r\n");
	EXPECT_BODY(p, "a\r\r\n", -1, "a\r\r\n.\r\n");
	EXPECT_BODY(p, "\r\r\n", -1, "\r\r\n.\r\n");
	/* Dot-stuffing. */
	EXPECT_BODY(p, ".\n", -1, "..\r\n.\r\n");
	EXPECT_BODY(p, ".x\n..\n.\r\nx.\n .\n", -1,
	    "..x\r\n...\r\n..\r\nx.\r\n .\r\n.\r\n");
	EXPECT_BODY(p, "\r.\n", -1, "\r.\r\n.\r\n");
	/* A last line without LF; a CR at the very end ends it. */
	EXPECT_BODY(p, "abc", -1, "abc\r\n.\r\n");
	EXPECT_BODY(p, "abc\r", -1, "abc\r\n.\r\n");
	EXPECT_BODY(p, "a\n\r", -1, "a\r\n\r\n.\r\n");
	EXPECT_BODY(p, "\r", -1, "\r\n.\r\n");
	EXPECT_BODY(p, "a\r\r", -1, "a\r\r\n.\r\n");
	EXPECT_BODY(p, ".", -1, "..\r\n.\r\n");
	/* NUL and 8-bit bytes pass. */
	EXPECT_BODY(p, "\0\xff\n.\0\n", -1, "\0\xff\r\n..\0\r\n.\r\n");
}

static void
test_body_top(void **state)
{
	static const char msg[] = "H1: a\nH2: b\n\nl1\n.l2\nl3\n";
	static const char crlf[] = "H: a\r\n\r\nl1\r\nl2\r\n";
	struct pair	*p = *state;
	struct io_body	 b;

	EXPECT_BODY(p, msg, 0, "H1: a\r\nH2: b\r\n\r\n.\r\n");
	EXPECT_BODY(p, msg, 1, "H1: a\r\nH2: b\r\n\r\nl1\r\n.\r\n");
	EXPECT_BODY(p, msg, 2, "H1: a\r\nH2: b\r\n\r\nl1\r\n..l2\r\n.\r\n");
	EXPECT_BODY(p, msg, 3,
	    "H1: a\r\nH2: b\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
	EXPECT_BODY(p, msg, 4,
	    "H1: a\r\nH2: b\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
	EXPECT_BODY(p, msg, INT64_MAX,
	    "H1: a\r\nH2: b\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
	EXPECT_BODY(p, msg, -1,
	    "H1: a\r\nH2: b\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
	EXPECT_BODY(p, crlf, 0, "H: a\r\n\r\n.\r\n");
	EXPECT_BODY(p, crlf, 1, "H: a\r\n\r\nl1\r\n.\r\n");
	/* No empty line: everything is header, sent whole. */
	EXPECT_BODY(p, "H: a\nH: b\n", 0, "H: a\r\nH: b\r\n.\r\n");
	EXPECT_BODY(p, "H: a\nH: b", 0, "H: a\r\nH: b\r\n.\r\n");
	/* Lines that only look empty do not end the header. */
	EXPECT_BODY(p, "H\n \n\r\r\nb\n\nc\n", 0,
	    "H\r\n \r\n\r\r\nb\r\n\r\n.\r\n");
	/* A body without a final LF. */
	EXPECT_BODY(p, "H\n\nbody", 1, "H\r\n\r\nbody\r\n.\r\n");
	EXPECT_BODY(p, "H\n\nbody", 0, "H\r\n\r\n.\r\n");
	EXPECT_BODY(p, "H\n\nbody\r", 1, "H\r\n\r\nbody\r\n.\r\n");
	/* An empty message and a header-only one ending in the empty line. */
	EXPECT_BODY(p, "", 0, ".\r\n");
	EXPECT_BODY(p, "\n", 0, "\r\n.\r\n");
	EXPECT_BODY(p, "\r\n", 2, "\r\n.\r\n");
	EXPECT_BODY(p, "\nx\ny\n", 1, "\r\nx\r\n.\r\n");

	/* done is set once nothing more is wanted, and input is ignored. */
	io_body_begin(&b, 1);
	assert_int_equal(io_body_write(p->io, &b, msg, sizeof(msg) - 1),
	    IO_OK);
	assert_true(b.done);
	assert_int_equal(io_body_write(p->io, &b, "more\n", 5), IO_OK);
	assert_int_equal(io_body_end(p->io, &b), IO_OK);
	assert_int_equal(io_body_dot(p->io), IO_OK);
	assert_int_equal(io_flush(p->io), IO_OK);
	{
		static const char want[] = "H1: a\r\nH2: b\r\n\r\nl1\r\n.\r\n";
		size_t	 len;
		char	*got = peer_recv(p, &len);

		assert_int_equal(len, sizeof(want) - 1);
		assert_memory_equal(got, want, len);
		free(got);
	}
	io_body_begin(&b, -1);
	assert_int_equal(io_body_write(p->io, &b, msg, sizeof(msg) - 1),
	    IO_OK);
	assert_false(b.done);
	assert_int_equal(io_body_end(p->io, &b), IO_OK);
	assert_int_equal(io_body_dot(p->io), IO_OK);
	assert_int_equal(io_flush(p->io), IO_OK);
	free(peer_recv(p, &(size_t){ 0 }));
}

/*
 * An independent model of the wire form: split at LF, drop one CR before
 * LF or at the very end, stuff, CRLF; TOP stops after the header's empty
 * line and max body lines.
 */
static char *
body_model(const char *in, size_t len, int64_t max, size_t *out_len)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	size_t		 i = 0, n, next;
	const char	*lf;
	int		 in_header = 1, empty;
	int64_t		 left = max;

	tu_buf_add(&b, "", 0);
	while (i < len) {
		lf = memchr(in + i, '\n', len - i);
		if (lf != NULL) {
			n = (size_t)(lf - in) - i;
			next = (size_t)(lf - in) + 1;
			if (n > 0 && in[i + n - 1] == '\r')
				n--;
			empty = n == 0;
		} else {
			n = len - i;
			next = len;
			if (in[len - 1] == '\r')
				n--;
			empty = 0;
		}
		if (n > 0 && in[i] == '.')
			tu_buf_add(&b, ".", 1);
		tu_buf_add(&b, in + i, n);
		tu_buf_add(&b, "\r\n", 2);
		i = next;
		if (max < 0)
			continue;
		if (in_header) {
			if (empty) {
				in_header = 0;
				if (left == 0)
					break;
			}
		} else if (--left == 0)
			break;
	}
	tu_buf_add(&b, ".\r\n", 3);
	*out_len = b.len;
	return b.p;
}

static void
check_splits(struct pair *p, const char *in, size_t len, int64_t max)
{
	char	*whole, *model, *got;
	size_t	 wlen, mlen, glen, cut, *cuts, i;

	whole = body_whole(p, in, len, max, &wlen);
	model = body_model(in, len, max, &mlen);
	if (wlen != mlen || memcmp(whole, model, wlen) != 0)
		fail_msg("input of %zu bytes, max %lld: whole output differs "
		    "from the model", len, (long long)max);
	/* Every split into two chunks (empty chunks included). */
	for (cut = 0; cut <= len; cut++) {
		got = body_run(p, in, len, max, &cut, 1, &glen);
		if (glen != wlen || memcmp(got, whole, wlen) != 0)
			fail_msg("input of %zu bytes, max %lld: split at %zu "
			    "differs", len, (long long)max, cut);
		free(got);
	}
	/* Byte by byte. */
	cuts = calloc(len + 1, sizeof(*cuts));
	for (i = 0; i < len; i++)
		cuts[i] = i + 1;
	got = body_run(p, in, len, max, cuts, len > 0 ? len - 1 : 0, &glen);
	if (glen != wlen || memcmp(got, whole, wlen) != 0)
		fail_msg("input of %zu bytes, max %lld: byte by byte differs",
		    len, (long long)max);
	free(got);
	free(cuts);
	free(whole);
	free(model);
}

static void
test_body_splits(void **state)
{
#define IN(s)	{ s, sizeof(s) - 1 }
	static const struct {
		const char	*s;
		size_t		 len;
	} inputs[] = {
		IN("H: a\r\n.X: b\n\r\n.\r\n..\n\rlead\nmid\rcr\nx\r\r\n"
		    "\r\r\n\n.\rend\r"),
		IN("Subject: s\n\nline1\r\n\r\n.\nline3\n."),
		IN("H\r\n\r\n\r\n\r\n.\r\n"),
		IN("\r\r\r\n\r\n\n\r"),
		IN("a\rb\r\nc"),
		IN("...\r\n.\r\r\n\r.\n"),
		IN("H: x\n\n\0\r\n\xff.\n.\0\r"),
		IN(""),
		IN("\n"),
		IN("."),
	};
#undef IN
	static const int64_t maxes[] = { -1, 0, 1, 2, 3, INT64_MAX };
	struct pair	*p = *state;
	size_t		 i, j;

	for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
		for (j = 0; j < sizeof(maxes) / sizeof(maxes[0]); j++)
			check_splits(p, inputs[i].s, inputs[i].len, maxes[j]);
}

/* Pseudo-random inputs over the interesting bytes, against the model. */
static void
test_body_random(void **state)
{
	static const char alphabet[] = { 'a', '.', '\r', '\n', '\n', '\r',
	    '\0', 'F' };
	static const int64_t maxes[] = { -1, 0, 1, 2 };
	struct pair	*p = *state;
	char		 in[24];
	uint32_t	 seed = 12345;
	size_t		 k, i, len, j;

	for (k = 0; k < 250; k++) {
		seed = seed * 1103515245u + 12345u;
		len = (seed >> 16) % sizeof(in);
		for (i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = alphabet[(seed >> 16) % sizeof(alphabet)];
		}
		for (j = 0; j < sizeof(maxes) / sizeof(maxes[0]); j++)
			check_splits(p, in, len, maxes[j]);
	}
}

/* ---- credential wiping ------------------------------------------------ */

/* Occurrences of needle anywhere in the io's input buffer. */
static int
inbuf_count(struct pair *p, const char *needle)
{
	const char	*buf, *q;
	size_t		 size, n = strlen(needle), off = 0;
	int		 count = 0;

	buf = io_inbuf(p->io, &size);
	while (off + n <= size &&
	    (q = memmem(buf + off, size - off, needle, n)) != NULL) {
		count++;
		off = (size_t)(q - buf) + 1;
	}
	return count;
}

/* Every byte of the input buffer but the pending ones is zero. */
static void
assert_wiped_but_pending(struct pair *p)
{
	const unsigned char *buf;
	const void	*pend;
	size_t		 size, n, i, start;

	buf = io_inbuf(p->io, &size);
	n = io_pending(p->io, &pend);
	start = (size_t)((const unsigned char *)pend - buf);
	assert_true(start + n <= size);
	for (i = 0; i < size; i++)
		if ((i < start || i >= start + n) && buf[i] != 0)
			fail_msg("inbuf[%zu] = 0x%02x after the wipe (pending "
			    "%zu at %zu)", i, buf[i], n, start);
}

static void
test_wipe_consumed(void **state)
{
	struct pair	*p = *state;
	const void	*pend;

	peer_send(p, "PASS hunter2-wipe\r\nSTAT\r\n", 25);
	expect_line(p, "PASS hunter2-wipe", 17);
	/* The line is read, yet its bytes are still in the buffer... */
	assert_int_equal(inbuf_count(p, "hunter2-wipe"), 1);
	io_wipe_consumed(p->io);
	/* ...until the wipe, which leaves the pipelined STAT alone. */
	assert_int_equal(inbuf_count(p, "hunter2-wipe"), 0);
	assert_wiped_but_pending(p);
	assert_int_equal(io_pending(p->io, &pend), 6);
	assert_memory_equal(pend, "STAT\r\n", 6);
	expect_line(p, "STAT", 4);
	io_wipe_consumed(p->io);
	assert_wiped_but_pending(p);
	assert_int_equal(io_pending(p->io, &pend), 0);
}

/*
 * A line that arrives in two reads is moved to the front of the buffer
 * in between; the copy the move leaves behind goes too.
 */
static void
test_wipe_stale_copy(void **state)
{
	struct pair	*p = *state;

	peer_send(p, "STAT\r\nPASS stale-secret", 23);
	expect_line(p, "STAT", 4);
	peer_send(p, "\r\n", 2);
	expect_line(p, "PASS stale-secret", 17);
	/* The read copy and the one left past the end of the moved bytes. */
	assert_int_equal(inbuf_count(p, "cret"), 2);
	io_wipe_consumed(p->io);
	assert_int_equal(inbuf_count(p, "cret"), 0);
	assert_wiped_but_pending(p);
}

/* A drained over-long line ("PASS" and a long password) is wiped too. */
static void
test_wipe_toolong(void **state)
{
	struct pair	*p = *state;
	char		 line[400];

	memset(line, 'P', sizeof(line));
	memcpy(line, "PASS ", 5);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	peer_send(p, line, sizeof(line));
	peer_send(p, "NOOP\r\n", 6);
	expect_status(p, IO_TOOLONG);
	assert_true(inbuf_count(p, "PPPP") > 0);
	io_wipe_consumed(p->io);
	assert_int_equal(inbuf_count(p, "PPPP"), 0);
	assert_wiped_but_pending(p);
	expect_line(p, "NOOP", 4);
}

/* Preloaded bytes (a handover) are pending until read, then wiped. */
static void
test_wipe_preloaded(void **state)
{
	struct pair	*p = *state;

	assert_int_equal(io_preload(p->io, "APOP a 0123\r\nLIST\r\n", 19), 0);
	io_wipe_consumed(p->io);
	assert_int_equal(inbuf_count(p, "APOP a 0123"), 1);
	expect_line(p, "APOP a 0123", 11);
	io_wipe_consumed(p->io);
	assert_int_equal(inbuf_count(p, "0123"), 0);
	assert_wiped_but_pending(p);
	expect_line(p, "LIST", 4);
}

/* io_output_octets counts what is queued, sent or not, body included. */
static void
test_output_octets(void **state)
{
	struct pair	*p = *state;
	struct io_body	 b;
	char		*out;
	size_t		 len;

	assert_int_equal(io_output_octets(p->io), 0);
	assert_int_equal(io_write(p->io, "+OK\r\n", 5), IO_OK);
	assert_int_equal(io_output_octets(p->io), 5);
	assert_int_equal(io_flush(p->io), IO_OK);
	assert_int_equal(io_output_octets(p->io), 5);
	io_body_begin(&b, -1);
	assert_int_equal(io_body_write(p->io, &b, "a\n.b\n", 5), IO_OK);
	assert_int_equal(io_body_dot(p->io), IO_OK);
	/* "a\r\n..b\r\n.\r\n" */
	assert_int_equal(io_output_octets(p->io), 5 + 11);
	assert_int_equal(io_flush(p->io), IO_OK);
	out = peer_recv(p, &len);
	assert_int_equal(len, 16);
	free(out);
	assert_int_equal(io_output_octets(p->io), 16);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_getline_basic,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_getline_cr_nul,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_getline_limits,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_getline_huge,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_getline_eof_midline,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_getline_eof_midline_toolong,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_getline_timeout,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_getline_flushes,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_preload,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_preload_before_buffered,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_preload_full,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_printf_overflow,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_write_large,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_body_basic,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_body_top,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_body_splits,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_body_random,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_wipe_consumed,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_wipe_stale_copy,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_wipe_toolong,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_wipe_preloaded,
		    pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_output_octets,
		    pair_setup, pair_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
