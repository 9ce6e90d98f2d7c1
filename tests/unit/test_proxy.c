/*
 * test_proxy.c: the PROXY protocol parser, the reader that takes exactly
 * a header off a socket or a pipe, and the trusted networks (proxy.h).
 */
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy.h"

#define V2SIG	"\r\n\r\n\0\r\nQUIT\n"
#define POP3	"USER x\r\n"

/* ---- helpers --------------------------------------------------------- */

/* "addr port" of a parsed address, for comparing with the table. */
static const char *
fmt_addr(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const struct sockaddr_in	*s4 = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6	*s6 = (const struct sockaddr_in6 *)ss;
	char				 a[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		assert_non_null(inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a)));
		snprintf(buf, size, "%s %u", a, ntohs(s4->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		assert_non_null(inet_ntop(AF_INET6, &s6->sin6_addr, a,
		    sizeof(a)));
		snprintf(buf, size, "%s %u", a, ntohs(s6->sin6_port));
	} else
		snprintf(buf, size, "unspec");
	return buf;
}

/* A growing v2 header: the fixed part, then whatever is appended. */
struct hdr {
	unsigned char	 b[2 * PROXY_HDR_MAX];
	size_t		 len;
};

static void
put(struct hdr *h, const void *p, size_t n)
{
	assert_true(h->len + n <= sizeof(h->b));
	memcpy(h->b + h->len, p, n);
	h->len += n;
}

static void
put16(struct hdr *h, unsigned int v)
{
	unsigned char	 b[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	put(h, b, 2);
}

/* Starts a header; v2_end fills in the length field. */
static void
v2_begin(struct hdr *h, unsigned int ver_cmd, unsigned int fam)
{
	unsigned char	 b[2] = { (unsigned char)ver_cmd, (unsigned char)fam };

	h->len = 0;
	put(h, V2SIG, 12);
	put(h, b, 2);
	put16(h, 0);
}

static void
v2_end(struct hdr *h)
{
	size_t	 n = h->len - 16;

	h->b[14] = (unsigned char)(n >> 8);
	h->b[15] = (unsigned char)n;
}

static void
v2_tcp4(struct hdr *h, const char *src, unsigned int sport, const char *dst,
    unsigned int dport)
{
	struct in_addr	 a;

	assert_int_equal(inet_pton(AF_INET, src, &a), 1);
	put(h, &a, 4);
	assert_int_equal(inet_pton(AF_INET, dst, &a), 1);
	put(h, &a, 4);
	put16(h, sport);
	put16(h, dport);
}

static void
v2_tcp6(struct hdr *h, const char *src, unsigned int sport, const char *dst,
    unsigned int dport)
{
	struct in6_addr	 a;

	assert_int_equal(inet_pton(AF_INET6, src, &a), 1);
	put(h, &a, 16);
	assert_int_equal(inet_pton(AF_INET6, dst, &a), 1);
	put(h, &a, 16);
	put16(h, sport);
	put16(h, dport);
}

static void
tlv(struct hdr *h, unsigned int type, const void *v, size_t n)
{
	unsigned char	 t = (unsigned char)type;

	put(h, &t, 1);
	put16(h, (unsigned int)n);
	put(h, v, n);
}

/* PP2_TYPE_SSL: client flags, verify, then a PP2_SUBTYPE_SSL_VERSION. */
static void
tlv_ssl(struct hdr *h, unsigned int client)
{
	unsigned char	 v[5 + 3 + 7] = { (unsigned char)client, 0, 0, 0, 0,
	    0x21, 0, 7, 'T', 'L', 'S', 'v', '1', '.', '3' };

	tlv(h, 0x20, v, sizeof(v));
}

/* The test's own CRC32c, checked against the RFC 3720 check value. */
static uint32_t
crc32c(const unsigned char *p, size_t len)
{
	uint32_t	 c = 0xffffffff;
	int		 k;

	while (len-- > 0) {
		c ^= *p++;
		for (k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78 & (0 - (c & 1)));
	}
	return c ^ 0xffffffff;
}

static void
expect_fail(const void *buf, size_t len, const char *why)
{
	struct proxy_info	 info;
	const char		*w = NULL;
	int			 r;

	r = proxy_parse(buf, len, &info, &w);
	if (r != -1 || w == NULL || strcmp(w, why) != 0)
		fail_msg("%.*s: got %d \"%s\", want -1 \"%s\"", (int)len,
		    (const char *)buf, r, w == NULL ? "(null)" : w, why);
}

/* ---- version 1 -------------------------------------------------------- */

struct v1_case {
	const char	*in;
	int		 want;		/* length, 0 or -1 */
	const char	*why;		/* for -1 */
	int		 local;
	const char	*src, *dst;	/* "addr port" */
};

#define BAD(in, why)	{ in, -1, why, 0, NULL, NULL }

static const struct v1_case v1_cases[] = {
	{ "PROXY TCP4 192.168.0.1 192.168.0.11 56324 110\r\n", 47, NULL, 0,
	    "192.168.0.1 56324", "192.168.0.11 110" },
	{ "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", 56,
	    NULL, 0, "255.255.255.255 65535", "255.255.255.255 65535" },
	{ "PROXY TCP4 0.0.0.0 1.2.3.4 0 0\r\n", 32, NULL, 0, "0.0.0.0 0",
	    "1.2.3.4 0" },
	{ "PROXY TCP6 2001:db8::1 ::1 4242 995\r\n", 37, NULL, 0,
	    "2001:db8::1 4242", "::1 995" },
	{ "PROXY TCP6 ::ffff:10.1.2.3 ::1 1 2\r\n", 36, NULL, 0,
	    "::ffff:10.1.2.3 1", "::1 2" },
	{ "PROXY UNKNOWN\r\n", 15, NULL, 1, "unspec", "unspec" },
	{ "PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n", 43, NULL, 1,
	    "unspec", "unspec" },
	{ "PROXY UNKNOWN whatever it says\r\n", 32, NULL, 1, "unspec",
	    "unspec" },
	/* Only the header is consumed. */
	{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" POP3, 32, NULL, 0,
	    "1.2.3.4 1", "5.6.7.8 2" },
	/* Not yet: no CRLF, or a CR at the very end. */
	{ "P", 0, NULL, 0, NULL, NULL },
	{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", 0, NULL, 0, NULL, NULL },
	{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", 0, NULL, 0, NULL, NULL },
	{ "PROXY TCP4 garbage", 0, NULL, 0, NULL, NULL },
	/* Refused. */
	BAD("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad signature"),
	BAD("PROXX", "bad signature"),
	BAD("GET / HTTP/1.0\r\n", "bad signature"),
	BAD("USER x\r\n", "bad signature"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bad line end"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n", "bad line end"),
	BAD("PROXY TCP4 1.2.3.4\n", "bad line end"),
	BAD("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "bad character"),
	BAD("PROXY UNKNOWN \x01\r\n", "bad character"),
	BAD("PROXY UNKNOWN \xff\r\n", "bad character"),
	BAD("PROXY\r\n", "bad format"),
	BAD("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad format"),
	BAD("PROXY \r\n", "bad protocol"),
	BAD("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad protocol"),
	BAD("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "bad protocol"),
	BAD("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "bad protocol"),
	BAD("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad protocol"),
	BAD("PROXY UNKNOWNX\r\n", "bad protocol"),
	BAD("PROXY TCP4\r\n", "bad format"),
	BAD("PROXY TCP4 \r\n", "bad format"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "bad format"),
	BAD("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "bad format"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "bad format"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "bad format"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "bad format"),
	BAD("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad address"),
	BAD("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad address"),
	BAD("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad address"),
	BAD("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad address"),
	BAD("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad address"),
	BAD("PROXY TCP6 ::1 1::2::3 1 2\r\n", "bad address"),
	BAD("PROXY TCP6 ::1 ::1:xyz 1 2\r\n", "bad address"),
	BAD("PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0 ::1 1 2\r\n",
	    "bad address"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n", "bad port"),
	BAD("PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n", "bad port"),
};

static void
test_v1_table(void **state)
{
	struct proxy_info	 info;
	const char		*why;
	char			 a[80];
	size_t			 i;
	int			 r;

	(void)state;
	for (i = 0; i < sizeof(v1_cases) / sizeof(v1_cases[0]); i++) {
		const struct v1_case	*c = &v1_cases[i];

		why = "unset";
		r = proxy_parse((const unsigned char *)c->in, strlen(c->in),
		    &info, &why);
		if (r != c->want)
			fail_msg("%s: got %d (%s), want %d", c->in, r,
			    why == NULL ? "-" : why, c->want);
		if (r == -1) {
			assert_non_null(why);
			if (strcmp(why, c->why) != 0)
				fail_msg("%s: got \"%s\", want \"%s\"", c->in,
				    why, c->why);
			continue;
		}
		assert_null(why);
		if (r == 0)
			continue;
		assert_int_equal(info.version, 1);
		assert_int_equal(info.local, c->local);
		assert_int_equal(info.ssl, 0);
		assert_string_equal(fmt_addr(&info.src, a, sizeof(a)), c->src);
		assert_string_equal(fmt_addr(&info.dst, a, sizeof(a)), c->dst);
	}
}

/* The spec's worst case, 107 octets with CRLF, is taken; 108 is not. */
static void
test_v1_bounds(void **state)
{
	static const char full[] = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
	struct proxy_info	 info;
	const char		*why;
	char			 line[256], a[80];
	int			 n;

	(void)state;
	n = snprintf(line, sizeof(line), "PROXY UNKNOWN %s %s 65535 65535\r\n",
	    full, full);
	assert_int_equal(n, PROXY_V1_MAX);
	assert_int_equal(proxy_parse((unsigned char *)line, (size_t)n, &info,
	    &why), PROXY_V1_MAX);
	assert_int_equal(info.local, 1);

	n = snprintf(line, sizeof(line), "PROXY TCP6 %s %s 65535 65535\r\n",
	    full, full);
	assert_int_equal(n, 104);
	assert_int_equal(proxy_parse((unsigned char *)line, (size_t)n, &info,
	    &why), 104);
	assert_string_equal(fmt_addr(&info.src, a, sizeof(a)),
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535");

	/* 108 octets: the CR is the 107th. */
	n = snprintf(line, sizeof(line), "PROXY UNKNOWN %s %s 65535 655355\r\n",
	    full, full);
	assert_int_equal(n, PROXY_V1_MAX + 1);
	expect_fail(line, (size_t)n, "too long");
	/* 106 octets and no CR yet: still possible; 107 without one: not. */
	assert_int_equal(proxy_parse((unsigned char *)line, 106, &info, &why),
	    0);
	expect_fail(line, 107, "too long");
	/* No CRLF in a long run of text. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY ", 6);
	expect_fail(line, sizeof(line), "too long");
}

/* ---- version 2 -------------------------------------------------------- */

static void
expect_ok(const struct hdr *h, int local, int ssl, const char *src,
    const char *dst)
{
	struct proxy_info	 info;
	const char		*why = "unset";
	char			 a[80];

	assert_int_equal(proxy_parse(h->b, h->len, &info, &why), (int)h->len);
	assert_null(why);
	assert_int_equal(info.version, 2);
	assert_int_equal(info.local, local);
	assert_int_equal(info.ssl, ssl);
	assert_string_equal(fmt_addr(&info.src, a, sizeof(a)), src);
	assert_string_equal(fmt_addr(&info.dst, a, sizeof(a)), dst);
}

static void
expect_v2_fail(const struct hdr *h, const char *why)
{
	expect_fail(h->b, h->len, why);
}

static void
test_v2_valid(void **state)
{
	struct hdr	 h;
	unsigned char	 z[300];

	(void)state;
	memset(z, 0, sizeof(z));
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "192.0.2.7", 40000, "198.51.100.1", 110);
	v2_end(&h);
	expect_ok(&h, 0, 0, "192.0.2.7 40000", "198.51.100.1 110");

	v2_begin(&h, 0x21, 0x21);
	v2_tcp6(&h, "2001:db8::7", 65535, "2001:db8::1", 995);
	v2_end(&h);
	expect_ok(&h, 0, 0, "2001:db8::7 65535", "2001:db8::1 995");

	/* LOCAL: the health check; its family and block are ignored. */
	v2_begin(&h, 0x20, 0x00);
	v2_end(&h);
	expect_ok(&h, 1, 0, "unspec", "unspec");
	v2_begin(&h, 0x20, 0x11);
	v2_tcp4(&h, "192.0.2.7", 1, "198.51.100.1", 2);
	tlv_ssl(&h, 1);
	v2_end(&h);
	expect_ok(&h, 1, 0, "unspec", "unspec");
	v2_begin(&h, 0x20, 0x77);
	put(&h, "\x01", 1);
	v2_end(&h);
	expect_ok(&h, 1, 0, "unspec", "unspec");

	/* PROXY over an unspecified family, with bytes: local. */
	v2_begin(&h, 0x21, 0x00);
	put(&h, "anything", 8);
	v2_end(&h);
	expect_ok(&h, 1, 0, "unspec", "unspec");

	/* AF_UNIX stream: local, TLVs still read. */
	v2_begin(&h, 0x21, 0x31);
	put(&h, z, 216);
	tlv_ssl(&h, 1);
	v2_end(&h);
	expect_ok(&h, 1, 1, "unspec", "unspec");

	/* TLVs: SSL with the client bit, and without; others skipped. */
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv(&h, 0x01, "pop3", 4);		/* ALPN */
	tlv(&h, 0x04, "", 0);			/* NOOP, empty */
	tlv_ssl(&h, 0x01 | 0x02 | 0x04);
	tlv(&h, 0x05, z, 128);			/* UNIQUE_ID */
	tlv(&h, 0xe0, "x", 1);			/* custom */
	v2_end(&h);
	expect_ok(&h, 0, 1, "10.0.0.1 1", "10.0.0.2 2");

	v2_begin(&h, 0x21, 0x21);
	v2_tcp6(&h, "::1", 1, "::2", 2);
	tlv_ssl(&h, 0x00);
	v2_end(&h);
	expect_ok(&h, 0, 0, "::1 1", "::2 2");

	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv_ssl(&h, 0x06);	/* certificate bits but no SSL bit */
	v2_end(&h);
	expect_ok(&h, 0, 0, "10.0.0.1 1", "10.0.0.2 2");

	/* SSL with only its fixed part. */
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv(&h, 0x20, "\x01\0\0\0\0", 5);
	v2_end(&h);
	expect_ok(&h, 0, 1, "10.0.0.1 1", "10.0.0.2 2");

	/* The largest length taken. */
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	while (h.len + 3 + 255 <= PROXY_HDR_MAX)
		tlv(&h, 0x04, z, 255);
	tlv(&h, 0x04, z, PROXY_HDR_MAX - h.len - 3);
	v2_end(&h);
	assert_int_equal(h.len, PROXY_HDR_MAX);
	expect_ok(&h, 0, 0, "10.0.0.1 1", "10.0.0.2 2");

	/* Only the header is consumed. */
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	v2_end(&h);
	put(&h, POP3, strlen(POP3));
	{
		struct proxy_info	 info;
		const char		*why;

		assert_int_equal(proxy_parse(h.b, h.len, &info, &why), 28);
	}
}

static void
test_v2_invalid(void **state)
{
	struct hdr	 h;
	unsigned char	 z[PROXY_HDR_MAX];
	size_t		 at;

	(void)state;
	memset(z, 0, sizeof(z));

	v2_begin(&h, 0x21, 0x11);
	h.b[11] = 'X';
	expect_v2_fail(&h, "bad signature");
	v2_begin(&h, 0x21, 0x11);
	h.b[4] = 'X';
	expect_v2_fail(&h, "bad signature");
	expect_fail("\r\n\r\n\r\n", 6, "bad signature");

	v2_begin(&h, 0x11, 0x11);
	expect_v2_fail(&h, "bad version");
	v2_begin(&h, 0x31, 0x11);
	expect_v2_fail(&h, "bad version");
	v2_begin(&h, 0x01, 0x11);
	expect_v2_fail(&h, "bad version");
	v2_begin(&h, 0x22, 0x11);
	expect_v2_fail(&h, "bad command");
	v2_begin(&h, 0x2f, 0x11);
	expect_v2_fail(&h, "bad command");

	v2_begin(&h, 0x21, 0x12);
	expect_v2_fail(&h, "datagram");
	v2_begin(&h, 0x21, 0x22);
	expect_v2_fail(&h, "datagram");
	v2_begin(&h, 0x21, 0x32);
	expect_v2_fail(&h, "datagram");
	v2_begin(&h, 0x21, 0x41);
	expect_v2_fail(&h, "bad family");
	v2_begin(&h, 0x21, 0x13);
	expect_v2_fail(&h, "bad family");
	v2_begin(&h, 0x21, 0x10);
	expect_v2_fail(&h, "bad family");
	v2_begin(&h, 0x21, 0x01);
	expect_v2_fail(&h, "bad family");
	v2_begin(&h, 0x21, 0xff);
	expect_v2_fail(&h, "bad family");

	/* Oversized: judged from the fixed part alone. */
	v2_begin(&h, 0x21, 0x11);
	h.b[14] = (PROXY_V2_LEN_MAX + 1) >> 8;
	h.b[15] = (PROXY_V2_LEN_MAX + 1) & 0xff;
	expect_v2_fail(&h, "too long");
	h.b[14] = h.b[15] = 0xff;
	expect_v2_fail(&h, "too long");

	/* An address block shorter than its family's. */
	v2_begin(&h, 0x21, 0x11);
	put(&h, z, 11);
	v2_end(&h);
	expect_v2_fail(&h, "short address");
	v2_begin(&h, 0x21, 0x21);
	put(&h, z, 35);
	v2_end(&h);
	expect_v2_fail(&h, "short address");
	v2_begin(&h, 0x21, 0x31);
	put(&h, z, 215);
	v2_end(&h);
	expect_v2_fail(&h, "short address");

	/* TLVs that do not fit the header. */
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv(&h, 0x04, "abc", 3);
	h.len--;	/* the value runs one octet past the header */
	v2_end(&h);
	expect_v2_fail(&h, "bad tlv");
	for (at = 1; at < 3; at++) {
		/* A partial TLV header after a whole one. */
		v2_begin(&h, 0x21, 0x11);
		v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
		tlv(&h, 0x04, "", 0);
		put(&h, "\x04\x00", at);
		v2_end(&h);
		expect_v2_fail(&h, "bad tlv");
	}
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	put(&h, "\x05\xff\xff", 3);	/* 65535 octets announced */
	put(&h, z, 20);
	v2_end(&h);
	expect_v2_fail(&h, "bad tlv");
	/* SSL shorter than its fixed part, or with a broken sub-TLV. */
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv(&h, 0x20, "\x01\0\0\0", 4);
	v2_end(&h);
	expect_v2_fail(&h, "bad tlv");
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv(&h, 0x20, "\x01\0\0\0\0\x21\0\x09TLSv1.3", 15);
	v2_end(&h);
	expect_v2_fail(&h, "bad tlv");
	/* Two SSL TLVs: which one to believe? */
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv_ssl(&h, 0);
	tlv_ssl(&h, 1);
	v2_end(&h);
	expect_v2_fail(&h, "bad tlv");
}

/* PP2_TYPE_CRC32C: checked when present. */
static void
test_v2_crc32c(void **state)
{
	struct hdr	 h;
	uint32_t	 c;
	size_t		 at;

	(void)state;
	assert_int_equal(crc32c((const unsigned char *)"123456789", 9),
	    0xe3069283);
	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv_ssl(&h, 1);
	tlv(&h, 0x03, "\0\0\0\0", 4);
	at = h.len - 4;
	tlv(&h, 0x04, "pad", 3);
	v2_end(&h);
	c = crc32c(h.b, h.len);
	h.b[at] = (unsigned char)(c >> 24);
	h.b[at + 1] = (unsigned char)(c >> 16);
	h.b[at + 2] = (unsigned char)(c >> 8);
	h.b[at + 3] = (unsigned char)c;
	expect_ok(&h, 0, 1, "10.0.0.1 1", "10.0.0.2 2");
	h.b[at + 3] ^= 1;
	expect_v2_fail(&h, "bad checksum");
	h.b[at + 3] ^= 1;
	h.b[17] ^= 1;		/* a source address octet */
	expect_v2_fail(&h, "bad checksum");

	v2_begin(&h, 0x21, 0x11);
	v2_tcp4(&h, "10.0.0.1", 1, "10.0.0.2", 2);
	tlv(&h, 0x03, "\0\0\0", 3);
	v2_end(&h);
	expect_v2_fail(&h, "bad tlv");
}

/* ---- prefixes and the reader ---------------------------------------- */

/* Every valid header the prefix and reader tests walk. */
static size_t
valid_headers(struct hdr *hs, size_t max)
{
	static const char *const v1[] = {
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 110\r\n",
		"PROXY TCP6 2001:db8::1 ::1 4242 995\r\n",
		"PROXY UNKNOWN\r\n",
	};
	size_t	 n = 0, i;

	for (i = 0; i < sizeof(v1) / sizeof(v1[0]); i++) {
		hs[n].len = 0;
		put(&hs[n++], v1[i], strlen(v1[i]));
	}
	v2_begin(&hs[n], 0x21, 0x11);
	v2_tcp4(&hs[n], "192.0.2.7", 40000, "198.51.100.1", 110);
	v2_end(&hs[n++]);
	v2_begin(&hs[n], 0x21, 0x21);
	v2_tcp6(&hs[n], "2001:db8::7", 1, "2001:db8::1", 995);
	tlv_ssl(&hs[n], 1);
	v2_end(&hs[n++]);
	v2_begin(&hs[n], 0x20, 0x00);
	v2_end(&hs[n++]);
	assert_true(n <= max);
	return n;
}

static void
test_prefixes(void **state)
{
	struct hdr		 hs[8];
	struct proxy_info	 info;
	const char		*why;
	size_t			 n, i, k;

	(void)state;
	n = valid_headers(hs, 8);
	for (i = 0; i < n; i++) {
		assert_int_equal(proxy_parse(hs[i].b, hs[i].len, &info, &why),
		    (int)hs[i].len);
		for (k = 0; k < hs[i].len; k++) {
			why = "unset";
			assert_int_equal(proxy_parse(hs[i].b, k, &info, &why),
			    0);
			assert_null(why);
			assert_int_equal(info.version, 0);
		}
	}
}

static void
write_all(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 w;

	while (len > 0) {
		w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		assert_true(w > 0);
		p += w;
		len -= (size_t)w;
	}
}

/* A socketpair or a pipe: fds[0] is read, fds[1] written. */
static void
channel(int sock, int fds[2])
{
	if (sock)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	else
		assert_int_equal(pipe(fds), 0);
}

/* Closes the writing side so that the reader sees end of file. */
static void
close_writer(int sock, int fds[2])
{
	if (sock)
		assert_int_equal(shutdown(fds[1], SHUT_WR), 0);
	else {
		close(fds[1]);
		fds[1] = -1;
	}
}

static void
close_channel(int fds[2])
{
	close(fds[0]);
	if (fds[1] != -1)
		close(fds[1]);
}

/* What is left to read after the header, up to end of file. */
static size_t
rest(int fd, char *buf, size_t size)
{
	size_t	 got = 0;
	ssize_t	 n;

	while (got < size && (n = read(fd, buf + got, size - got)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n > 0);
		got += (size_t)n;
	}
	return got;
}

/* Each header with POP3 bytes after it: all of them are left unread. */
static void
test_read_pipelined(void **state)
{
	struct hdr		 hs[8];
	struct proxy_info	 info, want;
	const char		*why;
	char			 buf[64];
	size_t			 n, i;
	int			 fds[2], sock;

	(void)state;
	n = valid_headers(hs, 8);
	for (sock = 0; sock < 2; sock++)
		for (i = 0; i < n; i++) {
			channel(sock, fds);
			write_all(fds[1], hs[i].b, hs[i].len);
			write_all(fds[1], POP3, strlen(POP3));
			close_writer(sock, fds);
			why = "unset";
			assert_int_equal(proxy_read(fds[0], 5000, &info, &why),
			    0);
			assert_null(why);
			assert_int_equal(proxy_parse(hs[i].b, hs[i].len, &want,
			    &why), (int)hs[i].len);
			assert_memory_equal(&info, &want, sizeof(info));
			assert_int_equal(rest(fds[0], buf, sizeof(buf)),
			    strlen(POP3));
			assert_memory_equal(buf, POP3, strlen(POP3));
			close_channel(fds);
		}
}

/* End of file after any proper prefix: "closed" at 0, else "truncated". */
static void
test_read_truncated(void **state)
{
	struct hdr		 hs[8];
	struct proxy_info	 info;
	const char		*why;
	size_t			 n, i, k;
	int			 fds[2], sock;

	(void)state;
	n = valid_headers(hs, 8);
	for (sock = 0; sock < 2; sock++)
		for (i = 0; i < n; i++)
			for (k = 0; k < hs[i].len; k++) {
				channel(sock, fds);
				write_all(fds[1], hs[i].b, k);
				close_writer(sock, fds);
				assert_int_equal(proxy_read(fds[0], 5000, &info,
				    &why), -1);
				assert_string_equal(why,
				    k == 0 ? "closed" : "truncated");
				close_channel(fds);
			}
}

/* Refusals come through the reader with proxy_parse's reason. */
static void
test_read_invalid(void **state)
{
	static const struct {
		const char	*in;
		size_t		 len;
		const char	*why;
	} cases[] = {
		{ POP3, 8, "bad signature" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n" POP3, 44,
		    "bad port" },
		{ V2SIG "\x21\x12\0\0", 16, "datagram" },
		{ V2SIG "\x21\x11\xff\xff", 16, "too long" },
		{ V2SIG "\x11\x11\0\0", 16, "bad version" },
	};
	struct proxy_info	 info;
	const char		*why;
	char			 line[200];
	size_t			 i;
	int			 fds[2], sock;

	(void)state;
	for (sock = 0; sock < 2; sock++) {
		for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			channel(sock, fds);
			write_all(fds[1], cases[i].in, cases[i].len);
			/* Left open: the verdict must not wait for more. */
			assert_int_equal(proxy_read(fds[0], 5000, &info, &why),
			    -1);
			assert_string_equal(why, cases[i].why);
			close_channel(fds);
		}
		/* 108 octets of text without a CRLF. */
		memset(line, 'x', sizeof(line));
		memcpy(line, "PROXY ", 6);
		channel(sock, fds);
		write_all(fds[1], line, sizeof(line));
		assert_int_equal(proxy_read(fds[0], 5000, &info, &why), -1);
		assert_string_equal(why, "too long");
		close_channel(fds);
	}
}

/*
 * A child sends the header and the POP3 bytes one octet at a time, with
 * a pause between them, so that the reader sees them arrive piecemeal.
 */
static void
test_read_dribble(void **state)
{
	struct hdr		 hs[8];
	struct proxy_info	 info;
	const char		*why;
	char			 buf[64];
	size_t			 n, i, k;
	pid_t			 pid;
	int			 fds[2], sock, status;

	(void)state;
	n = valid_headers(hs, 8);
	for (i = 0; i < n; i++)
		put(&hs[i], POP3, strlen(POP3));
	for (sock = 0; sock < 2; sock++)
		for (i = 0; i < n; i += 2) {
			channel(sock, fds);
			assert_true((pid = fork()) != -1);
			if (pid == 0) {
				close(fds[0]);
				for (k = 0; k < hs[i].len; k++) {
					if (write(fds[1], hs[i].b + k, 1) != 1)
						_exit(1);
					usleep(500);
				}
				_exit(0);
			}
			close(fds[1]);
			fds[1] = -1;
			assert_int_equal(proxy_read(fds[0], 60000, &info, &why),
			    0);
			assert_int_equal(rest(fds[0], buf, sizeof(buf)),
			    strlen(POP3));
			assert_memory_equal(buf, POP3, strlen(POP3));
			assert_int_equal(waitpid(pid, &status, 0), pid);
			assert_true(WIFEXITED(status) &&
			    WEXITSTATUS(status) == 0);
			close_channel(fds);
		}
}

/* Nothing, or a prefix, and the writer stays: "timeout". */
static void
test_read_timeout(void **state)
{
	struct proxy_info	 info;
	const char		*why;
	int			 fds[2], sock;

	(void)state;
	for (sock = 0; sock < 2; sock++) {
		channel(sock, fds);
		assert_int_equal(proxy_read(fds[0], 20, &info, &why), -1);
		assert_string_equal(why, "timeout");
		close_channel(fds);

		channel(sock, fds);
		write_all(fds[1], "PROXY TCP4 1.2", 14);
		assert_int_equal(proxy_read(fds[0], 20, &info, &why), -1);
		assert_string_equal(why, "timeout");
		close_channel(fds);

		channel(sock, fds);
		write_all(fds[1], V2SIG "\x21\x11\0\x0c" "abcd", 20);
		assert_int_equal(proxy_read(fds[0], 0, &info, &why), -1);
		assert_string_equal(why, "timeout");
		close_channel(fds);
	}
}

static void
test_read_badfd(void **state)
{
	struct proxy_info	 info;
	const char		*why;

	(void)state;
	assert_int_equal(proxy_read(-1, 10, &info, &why), -1);
	assert_string_equal(why, "read error");
}

/* ---- trusted networks ------------------------------------------------ */

static struct sockaddr_storage
sa(const char *addr)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1)
		s4->sin_family = AF_INET;
	else {
		assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
		s6->sin6_family = AF_INET6;
	}
	return ss;
}

static int
match(const struct proxy_nets *nets, const char *addr)
{
	struct sockaddr_storage	 ss = sa(addr);

	return proxy_nets_match(nets, (struct sockaddr *)&ss);
}

static void
test_nets_parse(void **state)
{
	static const struct {
		const char	*spec;
		int		 n;		/* -1: refused */
		const char	*why;
	} cases[] = {
		{ "10.0.0.0/8,::1/128,192.168.1.1", 3, NULL },
		{ "::/0", 1, NULL },
		{ "0.0.0.0/0", 1, NULL },
		{ "127.0.0.1", 1, NULL },
		{ "::ffff:10.0.0.0/104", 1, NULL },
		{ "2001:db8::/32,2001:db8:1::/48", 2, NULL },
		{ "192.168.1.128/25", 1, NULL },
		{ "10.0.0.0/33", -1, "bad prefix" },
		{ "::/129", -1, "bad prefix" },
		{ "1.2.3.4/", -1, "bad prefix" },
		{ "1.2.3.4/032", -1, "bad prefix" },
		{ "1.2.3.4/+3", -1, "bad prefix" },
		{ "1.2.3.4/-1", -1, "bad prefix" },
		{ "1.2.3.4/1000", -1, "bad prefix" },
		{ "1.2.3.4/32x", -1, "bad prefix" },
		{ "1.2.3.4/3/2", -1, "bad prefix" },
		{ "junk", -1, "bad address" },
		{ "", -1, "empty network" },
		{ ",", -1, "empty network" },
		{ "10.0.0.0/8,", -1, "empty network" },
		{ ",10.0.0.0/8", -1, "empty network" },
		{ "10.0.0.0/8,,::1", -1, "empty network" },
		{ "10.0.0.0/8, ::1", -1, "bad address" },
		{ " 10.0.0.0/8", -1, "bad address" },
		{ "10.0.0.0 /8", -1, "bad address" },
		{ "10.0.0", -1, "bad address" },
		{ "010.0.0.0/8", -1, "bad address" },
		{ "1::2::3", -1, "bad address" },
		{ "10.0.0.1/8", -1, "host bits set" },
		{ "192.168.1.1/24", -1, "host bits set" },
		{ "::1/127", -1, "host bits set" },
		{ "0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000/1",
		    -1, "network too long" },
	};
	struct proxy_nets	 nets;
	const char		*why;
	char			 spec[512];
	size_t			 i;
	int			 r, k;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why = "unset";
		r = proxy_nets_parse(cases[i].spec, &nets, &why);
		if (cases[i].n == -1) {
			if (r != -1 || why == NULL ||
			    strcmp(why, cases[i].why) != 0)
				fail_msg("\"%s\": got %d %s, want %s",
				    cases[i].spec, r, why == NULL ? "-" : why,
				    cases[i].why);
			assert_int_equal(nets.n, 0);
		} else {
			if (r != 0)
				fail_msg("\"%s\": refused (%s)", cases[i].spec,
				    why);
			assert_null(why);
			assert_int_equal(nets.n, cases[i].n);
		}
	}
	/* PROXY_NETS_MAX networks are taken, one more is not. */
	spec[0] = '\0';
	for (k = 0; k < PROXY_NETS_MAX; k++) {
		size_t	 l = strlen(spec);

		snprintf(spec + l, sizeof(spec) - l, "%s10.0.%d.0/24",
		    k == 0 ? "" : ",", k);
	}
	assert_int_equal(proxy_nets_parse(spec, &nets, &why), 0);
	assert_int_equal(nets.n, PROXY_NETS_MAX);
	strcat(spec, ",10.1.0.0/16");
	assert_int_equal(proxy_nets_parse(spec, &nets, &why), -1);
	assert_string_equal(why, "too many networks");
}

static void
test_nets_match(void **state)
{
	struct proxy_nets	 nets;
	struct sockaddr_storage	 ss;
	const char		*why;

	(void)state;
	assert_int_equal(proxy_nets_parse("10.0.0.0/8,::1/128,192.168.1.1,"
	    "2001:db8:80::/41,172.16.0.0/12", &nets, &why), 0);
	assert_int_equal(match(&nets, "10.0.0.0"), 1);
	assert_int_equal(match(&nets, "10.255.255.255"), 1);
	assert_int_equal(match(&nets, "11.0.0.0"), 0);
	assert_int_equal(match(&nets, "9.255.255.255"), 0);
	assert_int_equal(match(&nets, "192.168.1.1"), 1);
	assert_int_equal(match(&nets, "192.168.1.2"), 0);
	assert_int_equal(match(&nets, "172.31.255.255"), 1);
	assert_int_equal(match(&nets, "172.32.0.0"), 0);
	assert_int_equal(match(&nets, "172.15.255.255"), 0);
	assert_int_equal(match(&nets, "::1"), 1);
	assert_int_equal(match(&nets, "::2"), 0);
	assert_int_equal(match(&nets, "::"), 0);
	assert_int_equal(match(&nets, "2001:db8:80::1"), 1);
	assert_int_equal(match(&nets, "2001:db8:ff:ffff::1"), 1);
	assert_int_equal(match(&nets, "2001:db8:7f:ffff::1"), 0);
	assert_int_equal(match(&nets, "2001:db8:100::"), 0);
	/* An IPv4-mapped address matches as IPv4, and only so. */
	assert_int_equal(match(&nets, "::ffff:10.1.2.3"), 1);
	assert_int_equal(match(&nets, "::ffff:192.168.1.1"), 1);
	assert_int_equal(match(&nets, "::ffff:11.1.2.3"), 0);
	assert_int_equal(match(&nets, "::10.1.2.3"), 0);
	/* An IPv4-mapped network is an IPv4 one. */
	assert_int_equal(proxy_nets_parse("::ffff:127.0.0.0/104", &nets, &why),
	    0);
	assert_int_equal(match(&nets, "127.0.0.1"), 1);
	assert_int_equal(match(&nets, "::ffff:127.0.0.1"), 1);
	assert_int_equal(match(&nets, "128.0.0.1"), 0);
	/* ::/0 is every IPv6 address but no IPv4 one; 0.0.0.0/0 the reverse. */
	assert_int_equal(proxy_nets_parse("::/0", &nets, &why), 0);
	assert_int_equal(match(&nets, "2001:db8::1"), 1);
	assert_int_equal(match(&nets, "10.0.0.1"), 0);
	assert_int_equal(proxy_nets_parse("0.0.0.0/0", &nets, &why), 0);
	assert_int_equal(match(&nets, "10.0.0.1"), 1);
	assert_int_equal(match(&nets, "::ffff:10.0.0.1"), 1);
	assert_int_equal(match(&nets, "2001:db8::1"), 0);
	/* Other families never match. */
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	assert_int_equal(proxy_nets_match(&nets, (struct sockaddr *)&ss), 0);
	assert_int_equal(proxy_nets_match(&nets, NULL), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_table),
		cmocka_unit_test(test_v1_bounds),
		cmocka_unit_test(test_v2_valid),
		cmocka_unit_test(test_v2_invalid),
		cmocka_unit_test(test_v2_crc32c),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_read_pipelined),
		cmocka_unit_test(test_read_truncated),
		cmocka_unit_test(test_read_invalid),
		cmocka_unit_test(test_read_dribble),
		cmocka_unit_test(test_read_timeout),
		cmocka_unit_test(test_read_badfd),
		cmocka_unit_test(test_nets_parse),
		cmocka_unit_test(test_nets_match),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
