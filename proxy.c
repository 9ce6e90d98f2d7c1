/*
 * proxy.c: the PROXY protocol header a load balancer sends before the
 * POP3 stream, and the networks it is trusted from (see proxy.h).  Runs
 * in whichever process first reads the connection, before the greeting;
 * every byte it looks at is untrusted and every length is checked
 * against the buffer it lies in.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy.h"

static const unsigned char v1_sig[5] = { 'P', 'R', 'O', 'X', 'Y' };
static const unsigned char v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

/* The first 12 octets of an IPv4-mapped IPv6 address, ::ffff:0:0/96. */
static const uint8_t v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

#define V2_VERSION	0x20	/* high nibble of the 13th octet */
#define V2_CMD_LOCAL	0x00
#define V2_CMD_PROXY	0x01

#define V2_FAM_UNSPEC	0x00
#define V2_FAM_TCP4	0x11
#define V2_FAM_UDP4	0x12
#define V2_FAM_TCP6	0x21
#define V2_FAM_UDP6	0x22
#define V2_FAM_UNIX	0x31
#define V2_FAM_UNIXDG	0x32

#define V2_ADDR_TCP4	12	/* 2 * 4 + 2 * 2 */
#define V2_ADDR_TCP6	36	/* 2 * 16 + 2 * 2 */
#define V2_ADDR_UNIX	216	/* 2 * 108 */

#define PP2_TYPE_CRC32C	0x03
#define PP2_TYPE_SSL	0x20
#define PP2_CLIENT_SSL	0x01
#define PP2_SSL_FIXED	5	/* client (1) and verify (4) */

/* The longest v1 address field: a full IPv6 address. */
#define V1_ADDR_MAX	(INET6_ADDRSTRLEN - 1)
/* The longest -P item: an IPv6 address, "/" and three digits. */
#define NET_ITEM_MAX	(INET6_ADDRSTRLEN - 1 + 4)

static uint16_t
be16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* CRC32c (Castagnoli, reflected), as RFC 4960 appendix B computes it. */
static uint32_t
crc32c(uint32_t crc, const unsigned char *p, size_t len)
{
	int	 k;

	while (len-- > 0) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = crc & 1 ? crc >> 1 ^ 0x82f63b78 : crc >> 1;
	}
	return crc;
}

/* Is buf[0..len) a prefix of sig (or sig a prefix of it)? */
static int
sig_match(const unsigned char *buf, size_t len, const unsigned char *sig,
    size_t siglen)
{
	return memcmp(buf, sig, len < siglen ? len : siglen) == 0;
}

/* ---- version 1 ------------------------------------------------------- */

/*
 * The next field of line[*off..len): up to the next space or the end.
 * Fields are separated by exactly one space, so an empty field means a
 * doubled, leading or trailing space.  Returns the field's length, 0 if
 * it is empty; *off moves past it and the space after it.
 */
static size_t
v1_field(const char *line, size_t len, size_t *off, const char **field_r)
{
	const char	*sp;
	size_t		 n;

	*field_r = line + *off;
	sp = memchr(line + *off, ' ', len - *off);
	n = sp == NULL ? len - *off : (size_t)(sp - (line + *off));
	*off += n + (sp != NULL);
	return n;
}

static int
v1_addr(const char *f, size_t n, int family, void *dst)
{
	char	 s[V1_ADDR_MAX + 1];

	if (n == 0 || n > V1_ADDR_MAX)
		return -1;
	memcpy(s, f, n);
	s[n] = '\0';
	return inet_pton(family, s, dst) == 1 ? 0 : -1;
}

/* Decimal 0-65535, no sign, no leading zero. */
static int
v1_port(const char *f, size_t n, uint16_t *port_r)
{
	uint32_t	 v = 0;
	size_t		 i;

	if (n == 0 || n > 5 || (n > 1 && f[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (f[i] < '0' || f[i] > '9')
			return -1;
		v = v * 10 + (uint32_t)(f[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port_r = htons((uint16_t)v);
	return 0;
}

/* The line without its CRLF; every byte is printable US-ASCII. */
static int
v1_line(const char *line, size_t len, struct proxy_info *info,
    const char **why_r)
{
	struct sockaddr_in	*s4 = (struct sockaddr_in *)&info->src;
	struct sockaddr_in	*d4 = (struct sockaddr_in *)&info->dst;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)&info->src;
	struct sockaddr_in6	*d6 = (struct sockaddr_in6 *)&info->dst;
	const char		*f[4], *proto;
	size_t			 n[4], off = sizeof(v1_sig) + 1, plen;
	int			 family, i;

	if (len < off || line[sizeof(v1_sig)] != ' ') {
		*why_r = "bad format";
		return -1;
	}
	plen = v1_field(line, len, &off, &proto);
	if (plen == 7 && memcmp(proto, "UNKNOWN", 7) == 0) {
		/* The spec: ignore whatever precedes the CRLF. */
		info->local = 1;
		return 0;
	}
	if (plen == 4 && memcmp(proto, "TCP4", 4) == 0)
		family = AF_INET;
	else if (plen == 4 && memcmp(proto, "TCP6", 4) == 0)
		family = AF_INET6;
	else {
		*why_r = "bad protocol";
		return -1;
	}
	for (i = 0; i < 4; i++) {
		if (off >= len ||
		    (n[i] = v1_field(line, len, &off, &f[i])) == 0) {
			*why_r = "bad format";
			return -1;
		}
	}
	/* Exactly four fields: the last one ran to the end of the line. */
	if (f[3] + n[3] != line + len) {
		*why_r = "bad format";
		return -1;
	}
	if (family == AF_INET) {
		s4->sin_family = d4->sin_family = AF_INET;
		if (v1_addr(f[0], n[0], AF_INET, &s4->sin_addr) == -1 ||
		    v1_addr(f[1], n[1], AF_INET, &d4->sin_addr) == -1) {
			*why_r = "bad address";
			return -1;
		}
		if (v1_port(f[2], n[2], &s4->sin_port) == -1 ||
		    v1_port(f[3], n[3], &d4->sin_port) == -1) {
			*why_r = "bad port";
			return -1;
		}
	} else {
		s6->sin6_family = d6->sin6_family = AF_INET6;
		if (v1_addr(f[0], n[0], AF_INET6, &s6->sin6_addr) == -1 ||
		    v1_addr(f[1], n[1], AF_INET6, &d6->sin6_addr) == -1) {
			*why_r = "bad address";
			return -1;
		}
		if (v1_port(f[2], n[2], &s6->sin6_port) == -1 ||
		    v1_port(f[3], n[3], &d6->sin6_port) == -1) {
			*why_r = "bad port";
			return -1;
		}
	}
	return 0;
}

static int
v1_parse(const unsigned char *buf, size_t len, struct proxy_info *info,
    const char **why_r)
{
	size_t	 i, lim = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;

	for (i = 0; i < lim; i++) {
		if (buf[i] == '\r') {
			if (i + 2 > PROXY_V1_MAX) {
				*why_r = "too long";
				return -1;
			}
			if (i + 1 == len)
				return 0;
			if (buf[i + 1] != '\n') {
				*why_r = "bad line end";
				return -1;
			}
			if (v1_line((const char *)buf, i, info, why_r) == -1)
				return -1;
			info->version = 1;
			return (int)(i + 2);
		}
		if (buf[i] == '\n') {
			*why_r = "bad line end";
			return -1;
		}
		if (buf[i] < 0x20 || buf[i] > 0x7e) {
			*why_r = "bad character";
			return -1;
		}
	}
	if (len >= PROXY_V1_MAX) {
		*why_r = "too long";
		return -1;
	}
	return 0;
}

/* ---- version 2 ------------------------------------------------------- */

/*
 * Is p[0..len) a sequence of whole TLVs (type, 16-bit length, value)?
 * Returns 0 or -1; a caller that walks them afterwards need not check.
 */
static int
v2_tlvs_whole(const unsigned char *p, size_t len)
{
	size_t	 off = 0, vlen;

	while (off < len) {
		if (len - off < 3)
			return -1;
		vlen = be16(p + off + 1);
		if (vlen > len - off - 3)
			return -1;
		off += 3 + vlen;
	}
	return 0;
}

/* The TLVs after the addresses: hdr[tlv_off..hdr_len). */
static int
v2_tlvs(const unsigned char *hdr, size_t tlv_off, size_t hdr_len,
    struct proxy_info *info, const char **why_r)
{
	const unsigned char	*v;
	size_t			 off = tlv_off, vlen;
	uint32_t		 crc, want;
	int			 seen_ssl = 0, seen_crc = 0;

	if (v2_tlvs_whole(hdr + tlv_off, hdr_len - tlv_off) == -1) {
		*why_r = "bad tlv";
		return -1;
	}
	while (off < hdr_len) {
		vlen = be16(hdr + off + 1);
		v = hdr + off + 3;
		switch (hdr[off]) {
		case PP2_TYPE_SSL:
			if (seen_ssl++ || vlen < PP2_SSL_FIXED ||
			    v2_tlvs_whole(v + PP2_SSL_FIXED,
			    vlen - PP2_SSL_FIXED) == -1) {
				*why_r = "bad tlv";
				return -1;
			}
			info->ssl = (v[0] & PP2_CLIENT_SSL) != 0;
			break;
		case PP2_TYPE_CRC32C:
			if (seen_crc++ || vlen != 4) {
				*why_r = "bad tlv";
				return -1;
			}
			/* The sum covers the header with its own field zeroed. */
			want = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 |
			    (uint32_t)v[2] << 8 | v[3];
			crc = crc32c(0xffffffff, hdr, (size_t)(v - hdr));
			crc = crc32c(crc, (const unsigned char *)"\0\0\0\0", 4);
			crc = crc32c(crc, v + 4, hdr_len - (size_t)(v + 4 - hdr));
			if ((crc ^ 0xffffffff) != want) {
				*why_r = "bad checksum";
				return -1;
			}
			break;
		default:
			break;
		}
		off += 3 + vlen;
	}
	return 0;
}

static int
v2_parse(const unsigned char *buf, size_t len, struct proxy_info *info,
    const char **why_r)
{
	struct sockaddr_in	*s4 = (struct sockaddr_in *)&info->src;
	struct sockaddr_in	*d4 = (struct sockaddr_in *)&info->dst;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)&info->src;
	struct sockaddr_in6	*d6 = (struct sockaddr_in6 *)&info->dst;
	const unsigned char	*a = buf + PROXY_V2_FIXED;
	size_t			 alen, total;

	/* Judge each fixed octet as soon as it is there. */
	if (len > 12 && (buf[12] & 0xf0) != V2_VERSION) {
		*why_r = "bad version";
		return -1;
	}
	if (len > 12 && (buf[12] & 0x0f) != V2_CMD_LOCAL &&
	    (buf[12] & 0x0f) != V2_CMD_PROXY) {
		*why_r = "bad command";
		return -1;
	}
	/* LOCAL ignores the family, as the spec says. */
	if (len > 13 && (buf[12] & 0x0f) == V2_CMD_PROXY) {
		switch (buf[13]) {
		case V2_FAM_UNSPEC:
		case V2_FAM_TCP4:
		case V2_FAM_TCP6:
		case V2_FAM_UNIX:
			break;
		case V2_FAM_UDP4:
		case V2_FAM_UDP6:
		case V2_FAM_UNIXDG:
			/* POP3 runs over a stream. */
			*why_r = "datagram";
			return -1;
		default:
			*why_r = "bad family";
			return -1;
		}
	}
	if (len < PROXY_V2_FIXED)
		return 0;
	if ((alen = be16(buf + 14)) > PROXY_V2_LEN_MAX) {
		*why_r = "too long";
		return -1;
	}
	total = PROXY_V2_FIXED + alen;
	if (len < total)
		return 0;
	info->version = 2;
	if ((buf[12] & 0x0f) == V2_CMD_LOCAL) {
		/* The spec: discard the block, family and all. */
		info->local = 1;
		return (int)total;
	}
	switch (buf[13]) {
	case V2_FAM_TCP4:
		if (alen < V2_ADDR_TCP4) {
			*why_r = "short address";
			return -1;
		}
		s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		memcpy(&d4->sin_addr, a + 4, 4);
		memcpy(&s4->sin_port, a + 8, 2);
		memcpy(&d4->sin_port, a + 10, 2);
		return v2_tlvs(buf, PROXY_V2_FIXED + V2_ADDR_TCP4, total,
		    info, why_r) == -1 ? -1 : (int)total;
	case V2_FAM_TCP6:
		if (alen < V2_ADDR_TCP6) {
			*why_r = "short address";
			return -1;
		}
		s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		memcpy(&d6->sin6_addr, a + 16, 16);
		memcpy(&s6->sin6_port, a + 32, 2);
		memcpy(&d6->sin6_port, a + 34, 2);
		return v2_tlvs(buf, PROXY_V2_FIXED + V2_ADDR_TCP6, total,
		    info, why_r) == -1 ? -1 : (int)total;
	case V2_FAM_UNIX:
		/*
		 * The spec lets a receiver treat a family it does not
		 * implement as unspecified: the socket's addresses stand.
		 */
		if (alen < V2_ADDR_UNIX) {
			*why_r = "short address";
			return -1;
		}
		info->local = 1;
		return v2_tlvs(buf, PROXY_V2_FIXED + V2_ADDR_UNIX, total,
		    info, why_r) == -1 ? -1 : (int)total;
	default:
		/* Unspecified: where addresses end and TLVs begin is unknown. */
		info->local = 1;
		return (int)total;
	}
}

int
proxy_parse(const unsigned char *buf, size_t len, struct proxy_info *info,
    const char **why_r)
{
	int	 r;

	memset(info, 0, sizeof(*info));
	*why_r = NULL;
	if (len == 0)
		return 0;
	if (buf[0] == v1_sig[0] && sig_match(buf, len, v1_sig, sizeof(v1_sig)))
		r = v1_parse(buf, len, info, why_r);
	else if (buf[0] == v2_sig[0] &&
	    sig_match(buf, len, v2_sig, sizeof(v2_sig)))
		r = v2_parse(buf, len, info, why_r);
	else {
		*why_r = "bad signature";
		r = -1;
	}
	/* Nothing half-filled leaves on a failure or a "not yet". */
	if (r <= 0)
		memset(info, 0, sizeof(*info));
	return r;
}

/* ---- reading it off a descriptor -------------------------------------- */

static int64_t
now_ms(void)
{
	struct timespec	 ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable or the deadline (-1: none) passes. */
static int
wait_readable(int fd, int64_t deadline, const char **why_r)
{
	struct pollfd	 pfd;
	int64_t		 left;
	int		 r;

	for (;;) {
		left = -1;
		if (deadline >= 0) {
			left = deadline - now_ms();
			if (left < 0)
				left = 0;
			if (left > INT32_MAX)
				left = INT32_MAX;
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		r = poll(&pfd, 1, (int)left);
		if (r > 0)
			return 0;
		if (r == 0) {
			*why_r = "timeout";
			return -1;
		}
		if (errno != EINTR && errno != EAGAIN) {
			*why_r = "read error";
			return -1;
		}
	}
}

/*
 * Reads (or, with peek, peeks at) up to want bytes into buf after waiting
 * for them.  Returns the count (0 at end of file) or -1 with *why_r.
 */
static ssize_t
get_bytes(int fd, int is_sock, int peek, unsigned char *buf, size_t want,
    int64_t deadline, const char **why_r)
{
	ssize_t	 n;

	for (;;) {
		if (wait_readable(fd, deadline, why_r) == -1)
			return -1;
		if (is_sock)
			n = recv(fd, buf, want, peek ? MSG_PEEK : 0);
		else
			n = read(fd, buf, want);
		if (n >= 0)
			return n;
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
			*why_r = "read error";
			return -1;
		}
	}
}

/*
 * Consumes exactly want bytes of a socket into buf.  They were peeked at,
 * so they are there already; only another reader could make this wait.
 */
static int
take(int fd, unsigned char *buf, size_t want, int64_t deadline,
    const char **why_r)
{
	ssize_t	 n;

	while (want > 0) {
		if ((n = get_bytes(fd, 1, 0, buf, want, deadline,
		    why_r)) == -1)
			return -1;
		if (n == 0) {
			*why_r = "truncated";
			return -1;
		}
		buf += n;
		want -= (size_t)n;
	}
	return 0;
}

/*
 * Off a descriptor that cannot peek: how many more bytes certainly
 * belong to the header once have bytes of it are known to be a prefix.
 * Version 1 ends at an unknown CRLF, so it goes a byte at a time;
 * version 2 announces its length in the fixed part.
 */
static size_t
safe_want(const unsigned char *buf, size_t have)
{
	if (have == 0 || buf[0] != v2_sig[0])
		return 1;
	if (have < PROXY_V2_FIXED)
		return PROXY_V2_FIXED - have;
	return PROXY_V2_FIXED + be16(buf + 14) - have;
}

int
proxy_read(int fd, int timeout_ms, struct proxy_info *info,
    const char **why_r)
{
	unsigned char	 buf[PROXY_HDR_MAX];
	struct stat	 sb;
	int64_t		 deadline = -1;
	size_t		 have = 0, want;
	ssize_t		 n;
	int		 is_sock, r;

	memset(info, 0, sizeof(*info));
	*why_r = NULL;
	if (timeout_ms >= 0)
		deadline = now_ms() + timeout_ms;
	if (fstat(fd, &sb) == -1) {
		*why_r = "read error";
		return -1;
	}
	is_sock = S_ISSOCK(sb.st_mode);
	for (;;) {
		/*
		 * proxy_parse said "not yet" for buf[0..have), so all of it is
		 * header if a header comes at all, and it has been consumed.
		 */
		want = is_sock ? sizeof(buf) - have : safe_want(buf, have);
		if (want == 0 || want > sizeof(buf) - have) {
			*why_r = "too long";	/* proxy_parse prevents this */
			return -1;
		}
		if ((n = get_bytes(fd, is_sock, is_sock, buf + have, want,
		    deadline, why_r)) == -1)
			return -1;
		if (n == 0) {
			*why_r = have == 0 ? "closed" : "truncated";
			return -1;
		}
		r = proxy_parse(buf, have + (size_t)n, info, why_r);
		if (r == -1)
			return -1;
		if (r == 0) {
			if (is_sock && take(fd, buf + have, (size_t)n,
			    deadline, why_r) == -1)
				return -1;
			have += (size_t)n;
			continue;
		}
		/* The header ends inside what was just seen. */
		if ((size_t)r <= have) {
			*why_r = "truncated";	/* proxy_parse prevents this */
			return -1;
		}
		if (is_sock && take(fd, buf + have, (size_t)r - have,
		    deadline, why_r) == -1)
			return -1;
		/* Judge the bytes consumed, not the bytes peeked at. */
		if (proxy_parse(buf, (size_t)r, info, why_r) != r) {
			*why_r = "truncated";
			return -1;
		}
		return 0;
	}
}

/* ---- trusted networks ------------------------------------------------ */

static int
net_item(const char *s, size_t len, struct proxy_net *net, const char **why_r)
{
	char		 a[NET_ITEM_MAX + 1];
	const char	*slash;
	size_t		 alen, i, plen, bits;
	unsigned int	 prefix = 0;

	if (len == 0) {
		*why_r = "empty network";
		return -1;
	}
	if (len > NET_ITEM_MAX) {
		*why_r = "network too long";
		return -1;
	}
	slash = memchr(s, '/', len);
	alen = slash == NULL ? len : (size_t)(slash - s);
	memcpy(a, s, alen);
	a[alen] = '\0';
	memset(net, 0, sizeof(*net));
	if (memchr(a, ':', alen) != NULL) {
		net->family = AF_INET6;
		bits = 128;
	} else {
		net->family = AF_INET;
		bits = 32;
	}
	if (inet_pton(net->family, a, net->addr) != 1) {
		*why_r = "bad address";
		return -1;
	}
	if (slash == NULL)
		prefix = (unsigned int)bits;
	else {
		plen = len - alen - 1;
		if (plen == 0 || plen > 3 || (plen > 1 && slash[1] == '0')) {
			*why_r = "bad prefix";
			return -1;
		}
		for (i = 1; i <= plen; i++) {
			if (slash[i] < '0' || slash[i] > '9') {
				*why_r = "bad prefix";
				return -1;
			}
			prefix = prefix * 10 + (unsigned int)(slash[i] - '0');
		}
		if (prefix > bits) {
			*why_r = "bad prefix";
			return -1;
		}
	}
	net->prefix = prefix;
	/* Host bits set beyond the prefix. */
	for (i = 0; i < bits / 8; i++) {
		unsigned int	 keep = prefix >= (i + 1) * 8 ? 8 :
				    prefix <= i * 8 ? 0 : prefix - i * 8;

		if ((net->addr[i] & (0xff >> keep)) != 0) {
			*why_r = "host bits set";
			return -1;
		}
	}
	/* ::ffff:a.b.c.d/p, p >= 96, is the IPv4 network a.b.c.d/(p - 96). */
	if (net->family == AF_INET6 && prefix >= 96 &&
	    memcmp(net->addr, v4mapped, sizeof(v4mapped)) == 0) {
		memmove(net->addr, net->addr + 12, 4);
		memset(net->addr + 4, 0, 12);
		net->family = AF_INET;
		net->prefix = prefix - 96;
	}
	return 0;
}

int
proxy_nets_parse(const char *spec, struct proxy_nets *out, const char **why_r)
{
	const char	*p = spec, *comma;
	size_t		 len;

	memset(out, 0, sizeof(*out));
	*why_r = NULL;
	for (;;) {
		comma = strchr(p, ',');
		len = comma == NULL ? strlen(p) : (size_t)(comma - p);
		if (out->n == PROXY_NETS_MAX) {
			*why_r = "too many networks";
			goto fail;
		}
		if (net_item(p, len, &out->net[out->n], why_r) == -1)
			goto fail;
		out->n++;
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
 fail:
	memset(out, 0, sizeof(*out));
	return -1;
}

static int
prefix_equal(const uint8_t *a, const uint8_t *b, unsigned int prefix)
{
	unsigned int	 whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, whole) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[whole] ^ b[whole]) & (0xff00 >> rest & 0xff)) == 0;
}

int
proxy_nets_match(const struct proxy_nets *nets, const struct sockaddr *sa)
{
	const struct sockaddr_in6	*s6;
	const uint8_t			*addr;
	uint8_t				 buf[16];
	size_t				 i;
	int				 family;

	if (sa == NULL)
		return 0;
	if (sa->sa_family == AF_INET) {
		memcpy(buf, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		addr = buf;
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		s6 = (const struct sockaddr_in6 *)sa;
		memcpy(buf, &s6->sin6_addr, 16);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			memmove(buf, buf + 12, 4);
			family = AF_INET;
		} else
			family = AF_INET6;
		addr = buf;
	} else
		return 0;
	for (i = 0; i < nets->n && i < PROXY_NETS_MAX; i++)
		if (nets->net[i].family == family &&
		    prefix_equal(nets->net[i].addr, addr, nets->net[i].prefix))
			return 1;
	return 0;
}
