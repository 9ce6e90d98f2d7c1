/*
 * fuzz_proxy.c: libFuzzer harness for the PROXY protocol parser and its
 * reader.  Each input is what a balancer (or anyone) sends first.  The
 * parser must stay inside the buffer and its bounds, decide within
 * PROXY_HDR_MAX octets, give a header's every proper prefix "not yet",
 * and report only IPv4 or IPv6 address pairs or "local".  The reader, fed
 * the same bytes over a socketpair and over a pipe, must agree with it
 * and leave exactly the bytes after the header unread.
 */
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Inputs up to this size also go through the reader (one write each). */
#define READ_MAX	4096

static unsigned char	 left[READ_MAX];

static void
check_info(const struct proxy_info *info)
{
	int	 sf = info->src.ss_family, df = info->dst.ss_family;

	if (info->version != 1 && info->version != 2)
		abort();
	if (info->local) {
		if (sf != AF_UNSPEC || df != AF_UNSPEC)
			abort();
	} else if ((sf != AF_INET && sf != AF_INET6) || sf != df)
		abort();
	if (info->ssl != 0 && (info->ssl != 1 || info->version != 2))
		abort();
}

static void
check_read(int sock, const uint8_t *data, size_t size, int want,
    const struct proxy_info *want_info, const char *want_why)
{
	struct proxy_info	 info;
	const char		*why;
	size_t			 got = 0;
	ssize_t			 n;
	int			 fds[2], r;

	if (sock ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == -1 :
	    pipe(fds) == -1)
		abort();
	if (size > 0 && write(fds[1], data, size) != (ssize_t)size)
		abort();
	close(fds[1]);
	r = proxy_read(fds[0], 10000, &info, &why);
	if (want > 0) {
		if (r != 0 || why != NULL ||
		    memcmp(&info, want_info, sizeof(info)) != 0)
			abort();
		/* Exactly the bytes after the header are left. */
		while ((n = read(fds[0], left + got, sizeof(left) - got)) > 0)
			got += (size_t)n;
		if (n < 0 || got != size - (size_t)want ||
		    memcmp(left, data + want, got) != 0)
			abort();
	} else if (r != -1 || why == NULL)
		abort();
	else if (want == 0 &&
	    strcmp(why, size == 0 ? "closed" : "truncated") != 0)
		abort();
	else if (want == -1 && strcmp(why, want_why) != 0)
		abort();
	close(fds[0]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_info	 info, again;
	const char		*why, *why2;
	size_t			 k;
	int			 r, r2;

	r = proxy_parse(data, size, &info, &why);
	if (r > 0) {
		if ((size_t)r > size || r > PROXY_HDR_MAX || why != NULL)
			abort();
		check_info(&info);
		/* The header alone says the same. */
		if (proxy_parse(data, (size_t)r, &again, &why2) != r ||
		    memcmp(&info, &again, sizeof(info)) != 0)
			abort();
		/* Every proper prefix is "not yet". */
		for (k = 0; k < (size_t)r; k++)
			if (proxy_parse(data, k, &again, &why2) != 0)
				abort();
	} else if (r == 0) {
		if (why != NULL || size >= PROXY_HDR_MAX || info.version != 0)
			abort();
	} else if (r != -1 || why == NULL || info.version != 0)
		abort();
	/* The verdict never needs more than PROXY_HDR_MAX octets. */
	if (size > PROXY_HDR_MAX) {
		r2 = proxy_parse(data, PROXY_HDR_MAX, &again, &why2);
		if (r2 != r || (r == -1 && strcmp(why, why2) != 0))
			abort();
	}
	if (size <= READ_MAX) {
		check_read(1, data, size, r, &info, why);
		check_read(0, data, size, r, &info, why);
	}
	return 0;
}
