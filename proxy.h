/*
 * proxy.h: the PROXY protocol (HAProxy's proxy-protocol.txt, version 1
 * text and version 2 binary) that a load balancer puts in front of the
 * POP3 stream, and the networks it is accepted from.  A strict, bounded
 * parser over a buffer, and a reader that takes exactly the header's
 * bytes off a descriptor and not one byte of the POP3 stream after it.
 */
#ifndef POP3D_PROXY_H
#define POP3D_PROXY_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

/* Version 1: one line, CRLF included (the spec's worst case, "UNKNOWN"). */
#define PROXY_V1_MAX		107
/* Version 2: the fixed part (signature, version and command, family, length). */
#define PROXY_V2_FIXED		16
/*
 * Version 2: the largest length field accepted.  The spec asks receivers
 * to take at least 216 (an AF_UNIX address pair); 1024 leaves room for
 * HAProxy's TLVs (SSL version, cipher, client CN, unique id of up to 128
 * octets, authority) and still bounds the header at 1040 octets.
 */
#define PROXY_V2_LEN_MAX	1024
/* The longest header of either version. */
#define PROXY_HDR_MAX		(PROXY_V2_FIXED + PROXY_V2_LEN_MAX)

/* The networks a header is accepted from (-P CIDR[,CIDR...]). */
#define PROXY_NETS_MAX		16

struct proxy_net {
	int		 family;	/* AF_INET or AF_INET6 */
	unsigned int	 prefix;	/* 0-32 or 0-128 */
	uint8_t		 addr[16];	/* network order; host bits zero */
};

struct proxy_nets {
	size_t		 n;
	struct proxy_net net[PROXY_NETS_MAX];
};

/*
 * Parses "CIDR[,CIDR...]": each an IPv4 or IPv6 address as inet_pton
 * takes it, optionally "/PREFIX" (decimal, no sign, no leading zero, at
 * most 32 or 128); a bare address is a /32 or /128.  An IPv4-mapped IPv6
 * network of prefix 96 or more is kept as the IPv4 network it names.  No
 * spaces, no empty item, at most PROXY_NETS_MAX items, and no host bits
 * set beyond the prefix (10.0.0.1/8 is a typo more often than a wish).
 * Returns 0, or -1 with a short static reason in *why_r; *out is
 * overwritten either way.
 */
int	proxy_nets_parse(const char *spec, struct proxy_nets *out,
	    const char **why_r);

/*
 * Is sa (AF_INET or AF_INET6) inside one of the networks?  An
 * IPv4-mapped IPv6 address is matched as the IPv4 address it carries.
 * Returns 1 or 0; any other family is 0.
 */
int	proxy_nets_match(const struct proxy_nets *, const struct sockaddr *sa);

/* What a valid header says. */
struct proxy_info {
	int			 version;	/* 1 or 2 */
	/*
	 * The socket's own addresses stand: v1 "UNKNOWN", v2 LOCAL, and
	 * v2 PROXY with an unspecified or AF_UNIX family.  src and dst are
	 * then zero (AF_UNSPEC).
	 */
	int			 local;
	/* Otherwise both AF_INET or both AF_INET6, ports included. */
	struct sockaddr_storage	 src;	/* the client, as the balancer saw it */
	struct sockaddr_storage	 dst;	/* the address the client connected to */
	/*
	 * v2 PP2_TYPE_SSL with PP2_CLIENT_SSL set: the client reached the
	 * balancer over TLS.  Its verify field is about client certificates,
	 * which pop3d does not use, so it is not looked at.
	 */
	int			 ssl;
};

/*
 * Parses the header at the start of buf[0..len).  Returns its length
 * (> 0, at most PROXY_HDR_MAX) and fills *info; 0 when no verdict is
 * possible yet (buf is a prefix of something that may still become a
 * valid header: every proper prefix of a valid header gives 0); -1 when
 * it cannot be one, with a short static reason in *why_r.
 *
 * Version 1 is checked to the letter of the spec: "PROXY", then "TCP4",
 * "TCP6" or "UNKNOWN", single spaces, addresses of the stated family in
 * the form inet_pton takes (IPv4 without leading zeros), ports 0-65535
 * without sign or leading zero, CRLF within PROXY_V1_MAX octets.  Only
 * printable US-ASCII may precede the CRLF, for "UNKNOWN" too (whose rest
 * of line is otherwise ignored); a CR or LF alone is an error.
 *
 * Version 2: version 2; command LOCAL (its family, address block and
 * TLVs are skipped unread, as the spec says) or PROXY, whose family and
 * transport octet must be one of
 * 0x00 (unspecified: local), 0x11 (TCP/IPv4), 0x21 (TCP/IPv6) or 0x31
 * (UNIX stream: local); datagrams (0x12, 0x22, 0x32) and every other byte
 * are refused; length at most PROXY_V2_LEN_MAX and at least the address
 * block.  After the addresses (not after an unspecified one, whose size
 * is unknown) the rest must be whole TLVs; PP2_TYPE_SSL (at most one)
 * needs its 5-octet fixed part and whole sub-TLVs; PP2_TYPE_CRC32C, when
 * present, must be 4 octets and match.  Other TLVs are skipped.
 */
int	proxy_parse(const unsigned char *buf, size_t len,
	    struct proxy_info *info, const char **why_r);

/*
 * Reads one header from fd within timeout_ms in all (< 0: no limit) and
 * consumes exactly its bytes: what follows stays unread for the POP3
 * reader.  On a socket it peeks and then reads only what is known to be
 * header; on anything else it reads version 1 a byte at a time and
 * version 2 in exact lengths.  Returns 0 and fills *info, or -1 with a
 * short static reason in *why_r: one of proxy_parse's, or "timeout",
 * "closed" (end of file before any byte), "truncated" (end of file
 * inside a header) or "read error" (errno is set).
 */
int	proxy_read(int fd, int timeout_ms, struct proxy_info *info,
	    const char **why_r);

#endif
