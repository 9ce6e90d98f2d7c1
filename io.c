/*
 * io.c: the connection's bytes (see io.h).  Runs with the privileges of
 * whichever process serves the connection; every read is bounded.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "scan.h"

struct io {
	int	 in_fd;
	int	 out_fd;
	int	 timeout_ms;
	int	 out_is_socket;
	int	 timed_out;
	/*
	 * A pipe: writes of at most PIPE_BUF octets, each only once poll()
	 * says the pipe has room, so that none can block past the deadline
	 * (the descriptor is the launcher's, and stays blocking).
	 */
	int	 out_is_pipe;
	size_t	 in_off;	/* first unread byte of inbuf */
	size_t	 in_len;	/* bytes held in inbuf */
	size_t	 out_len;
	char	 inbuf[IO_INBUF_SIZE];
	char	 outbuf[IO_OUTBUF_SIZE];
};

struct io *
io_new(int in_fd, int out_fd, int timeout_sec)
{
	struct io	*io;
	struct stat	 sb;

	if ((io = calloc(1, sizeof(*io))) == NULL)
		return NULL;
	io->in_fd = in_fd;
	io->out_fd = out_fd;
	io->timeout_ms = timeout_sec > INT_MAX / 1000 ? INT_MAX :
	    timeout_sec * 1000;
	if (fstat(out_fd, &sb) == 0) {
		if (S_ISSOCK(sb.st_mode))
			io->out_is_socket = 1;
		else if (S_ISFIFO(sb.st_mode))
			io->out_is_pipe = 1;
	}
	return io;
}

void
io_free(struct io *io)
{
	free(io);
}

int
io_preload(struct io *io, const void *buf, size_t len)
{
	if (len > sizeof(io->inbuf) - io->in_len) {
		errno = ENOBUFS;
		return -1;
	}
	if (io->in_off > 0) {
		memmove(io->inbuf, io->inbuf + io->in_off, io->in_len);
		io->in_off = 0;
	}
	memmove(io->inbuf + len, io->inbuf, io->in_len);
	memcpy(io->inbuf, buf, len);
	io->in_len += len;
	return 0;
}

int
io_timed_out(const struct io *io)
{
	return io->timed_out;
}

size_t
io_pending(const struct io *io, const void **buf_r)
{
	*buf_r = io->inbuf + io->in_off;
	return io->in_len;
}

/* Waits until fd is ready for events or the deadline passes. */
static enum io_status
io_wait(struct io *io, int fd, short events)
{
	struct pollfd	 pfd;
	int		 n;

	pfd.fd = fd;
	pfd.events = events;
	for (;;) {
		n = poll(&pfd, 1, io->timeout_ms);
		if (n > 0)
			return IO_OK;
		if (n == 0) {
			io->timed_out = 1;
			return IO_TIMEOUT;
		}
		if (errno != EINTR)
			return IO_ERROR;
	}
}

/* Reads more input into the free end of inbuf. */
static enum io_status
io_fill(struct io *io)
{
	enum io_status	 st;
	ssize_t		 n;

	if (io->in_off > 0 && io->in_len > 0)
		memmove(io->inbuf, io->inbuf + io->in_off, io->in_len);
	io->in_off = 0;
	if ((st = io_flush(io)) != IO_OK)
		return st;
	for (;;) {
		if ((st = io_wait(io, io->in_fd, POLLIN)) != IO_OK)
			return st;
		n = read(io->in_fd, io->inbuf + io->in_len,
		    sizeof(io->inbuf) - io->in_len);
		if (n > 0) {
			io->in_len += (size_t)n;
			return IO_OK;
		}
		if (n == 0)
			return IO_EOF;
		if (errno != EINTR && errno != EAGAIN)
			return IO_ERROR;
	}
}

enum io_status
io_getline(struct io *io, char *buf, size_t bufsize, size_t maxlen,
    size_t *len_r)
{
	enum io_status	 st;
	char		*p, *lf;
	size_t		 scanned = 0, n;
	int		 toolong = 0;

	if (maxlen >= bufsize)
		maxlen = bufsize - 1;
	if (maxlen >= sizeof(io->inbuf))
		maxlen = sizeof(io->inbuf) - 1;
	for (;;) {
		p = io->inbuf + io->in_off;
		lf = memchr(p + scanned, '\n', io->in_len - scanned);
		if (lf != NULL) {
			n = (size_t)(lf - p) + 1;
			if (toolong || n > maxlen) {
				io->in_off += n;
				io->in_len -= n;
				return IO_TOOLONG;
			}
			io->in_off += n;
			io->in_len -= n;
			n--;
			if (n > 0 && p[n - 1] == '\r')
				n--;
			memcpy(buf, p, n);
			buf[n] = '\0';
			*len_r = n;
			return IO_OK;
		}
		if (io->in_len > maxlen) {
			/* Drain: keep no more than the line limit. */
			toolong = 1;
			io->in_off += io->in_len;
			io->in_len = 0;
		}
		scanned = io->in_len;
		if ((st = io_fill(io)) != IO_OK)
			return st;
	}
}

enum io_status
io_flush(struct io *io)
{
	enum io_status	 st;
	size_t		 off = 0, want;
	ssize_t		 n;

	while (off < io->out_len) {
		want = io->out_len - off;
		if (io->out_is_pipe) {
			if (want > PIPE_BUF)
				want = PIPE_BUF;
			if ((st = io_wait(io, io->out_fd, POLLOUT)) != IO_OK)
				return st;
		}
		if (io->out_is_socket)
			n = send(io->out_fd, io->outbuf + off, want,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
		else
			n = write(io->out_fd, io->outbuf + off, want);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return IO_ERROR;
		if ((st = io_wait(io, io->out_fd, POLLOUT)) != IO_OK)
			return st;
	}
	io->out_len = 0;
	return IO_OK;
}

enum io_status
io_write(struct io *io, const void *buf, size_t len)
{
	const char	*p = buf;
	enum io_status	 st;
	size_t		 n;

	while (len > 0) {
		if (io->out_len == sizeof(io->outbuf) &&
		    (st = io_flush(io)) != IO_OK)
			return st;
		n = sizeof(io->outbuf) - io->out_len;
		if (n > len)
			n = len;
		memcpy(io->outbuf + io->out_len, p, n);
		io->out_len += n;
		p += n;
		len -= n;
	}
	return IO_OK;
}

enum io_status
io_printf(struct io *io, const char *fmt, ...)
{
	char	 line[1024];
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		errno = EOVERFLOW;
		return IO_ERROR;
	}
	return io_write(io, line, (size_t)n);
}

void
io_body_begin(struct io_body *b, int64_t max_body_lines)
{
	b->at_bol = 1;
	b->cr_held = 0;
	b->in_header = 1;
	b->lines_left = max_body_lines;
	b->done = 0;
	b->octets = 0;
}

/* Ends the current line on the wire and counts it. */
static enum io_status
io_body_eol(struct io *io, struct io_body *b, int empty)
{
	enum io_status	 st;

	if ((st = io_write(io, "\r\n", 2)) != IO_OK)
		return st;
	b->octets += 2;
	b->at_bol = 1;
	b->cr_held = 0;
	if (b->in_header) {
		if (empty) {
			b->in_header = 0;
			if (b->lines_left == 0)
				b->done = 1;
		}
	} else if (b->lines_left > 0 && --b->lines_left == 0)
		b->done = 1;
	return IO_OK;
}

/*
 * RETR's path: whole lines converted straight into the output buffer,
 * which is sent whenever it fills.  Stops before an unfinished line or
 * one longer than the buffer.
 */
static enum io_status
io_body_lines(struct io *io, struct io_body *b, const char **pp,
    const char *end)
{
	enum io_status	 st;
	size_t		 n, out;
	uint64_t	 lines, stuffed;

	for (;;) {
		n = scan_crlf(io->outbuf + io->out_len,
		    sizeof(io->outbuf) - io->out_len, *pp, (size_t)(end - *pp),
		    &out, &lines, &stuffed);
		io->out_len += out;
		b->octets += out - stuffed;
		*pp += n;
		if (*pp == end || memchr(*pp, '\n', (size_t)(end - *pp)) == NULL)
			return IO_OK;
		if (n == 0 && io->out_len == 0)
			return IO_OK;
		if ((st = io_flush(io)) != IO_OK)
			return st;
	}
}

enum io_status
io_body_write(struct io *io, struct io_body *b, const char *buf, size_t len)
{
	enum io_status	 st;
	const char	*p = buf, *end = buf + len, *lf;
	size_t		 n;
	int		 empty;

	while (p < end && !b->done) {
		if (b->lines_left < 0 && b->at_bol && !b->cr_held) {
			if ((st = io_body_lines(io, b, &p, end)) != IO_OK)
				return st;
			if (p == end)
				break;
			/* An unfinished line, or one longer than the buffer. */
		}
		if (b->cr_held) {
			if (*p == '\n') {
				/* The held CR and this LF end the line. */
				empty = b->at_bol;
				p++;
				if ((st = io_body_eol(io, b, empty)) != IO_OK)
					return st;
				continue;
			}
			if ((st = io_write(io, "\r", 1)) != IO_OK)
				return st;
			b->octets++;
			b->cr_held = 0;
			b->at_bol = 0;
		}
		if (b->at_bol && *p == '.' &&
		    (st = io_write(io, ".", 1)) != IO_OK)
			return st;
		lf = memchr(p, '\n', (size_t)(end - p));
		if (lf == NULL) {
			n = (size_t)(end - p);
			if (p[n - 1] == '\r') {
				n--;
				if ((st = io_write(io, p, n)) != IO_OK)
					return st;
				b->octets += n;
				if (n > 0)
					b->at_bol = 0;
				b->cr_held = 1;
			} else {
				if ((st = io_write(io, p, n)) != IO_OK)
					return st;
				b->octets += n;
				b->at_bol = 0;
			}
			break;
		}
		n = (size_t)(lf - p);
		empty = b->at_bol && (n == 0 || (n == 1 && *p == '\r'));
		if (n > 0 && lf[-1] == '\r')
			n--;
		if ((st = io_write(io, p, n)) != IO_OK)
			return st;
		b->octets += n;
		p = lf + 1;
		if ((st = io_body_eol(io, b, empty)) != IO_OK)
			return st;
	}
	return IO_OK;
}

enum io_status
io_body_end(struct io *io, struct io_body *b)
{
	enum io_status	 st;

	if (!b->done && (b->cr_held || !b->at_bol)) {
		if ((st = io_write(io, "\r\n", 2)) != IO_OK)
			return st;
		b->octets += 2;
	}
	return IO_OK;
}

enum io_status
io_body_dot(struct io *io)
{
	return io_write(io, ".\r\n", 3);
}
