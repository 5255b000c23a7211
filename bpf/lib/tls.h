/* tls.h - the server name a TLS client asks for, read from the ClientHello at the start of a
 * TCP segment's payload (RFC 8446 4.1.2, RFC 5246 7.4.1.2; the name: RFC 6066 3), and matched
 * against a rule's name DFA case-insensitively (the DFA is compiled so: glob_dfa.py's
 * compile_name_globs, the DNS patterns' compiler). No certificate and no decryption: the
 * ClientHello is the one message of a TLS connection sent in the clear with the name in it.
 * Where the payload starts is the caller's (lib/dns.h's dns_locate, or an HTTP program's own);
 * its scratch map is declared here and looked up by the program (tests/test_layout.py).
 *
 * What can't be read here: a ClientHello whose server name is not in this segment (split over
 * segments before the name), one over several records, Encrypted Client Hello (the outer
 * name is the front server's), QUIC (UDP, encrypted Initial packets). */
#ifndef KFAULT_LIB_TLS_H
#define KFAULT_LIB_TLS_H

#include <linux/bpf.h>

#include "kfault.h"
#include "dfa_index.h"

#define TLS_RECORD_HANDSHAKE 22 /* ContentType handshake */
#define TLS_VERSION_MAJOR 3     /* every SSL 3.0 .. TLS 1.3 version's first byte */
#define TLS_RECORD_MAX 16384    /* a plaintext record's length at most (2^14) */
#define TLS_HANDSHAKE_CLIENT_HELLO 1
#define TLS_RECORD_HEADER 5    /* type, version, length */
#define TLS_HANDSHAKE_HEADER 4 /* type, 24-bit length */
#define TLS_SESSION_ID_MAX 32
#define TLS_EXTENSION_HEADER 4      /* type, length */
#define TLS_EXTENSION_SERVER_NAME 0 /* RFC 6066's server_name */
#define TLS_NAME_TYPE_HOST_NAME 0   /* the only NameType defined */
/* A host_name's bytes at most: a DNS name's 253 and a final dot some clients leave on it. */
#define TLS_HOST_NAME_MAX (KFAULT_TLS_NAME_MAX - 2)

/* A ClientHello's fixed start: its record and handshake headers, up to the session id. */
struct tls_hello_start {
	__u8 record_type;
	__u8 record_major, record_minor;
	__be16 record_length;
	__u8 handshake_type;
	__u8 handshake_length[3];
	__u8 client_major, client_minor;
	__u8 random[32];
	__u8 session_id_length;
} __attribute__((packed));

/* The server_name extension's data up to the first name's bytes. */
struct tls_server_name_start {
	__be16 list_length;
	__u8 name_type;
	__be16 name_length;
} __attribute__((packed));

/* Per-CPU scratch space: the server name read, and where the walk over the extensions is. In
 * map memory, not on the stack: what the verifier knows of a value read there is "some
 * number", so the walk's iterations meet again at each step instead of each being followed
 * to the end (lib/scratch.h says more). */
struct tls_scratch {
	__u8 name[KFAULT_TLS_NAME_MAX]; /* '.' then the host_name, NUL after it: compile_name_globs's form */
	volatile __u32 at;              /* the next extension's header */
	volatile __u32 end;             /* where the extensions end */
	volatile __u32 name_len;        /* bytes of name before its NUL, the '.' counted */
	__u32 pad;                      /* a per-CPU value is a multiple of 8 bytes */
};

/* 0 -> this CPU's scratch space: written and read by the program that reads server names. */
BPF_PERCPU_ARRAY(kfault_tls_scratch, struct tls_scratch, 1);

/* Can the payload at `offset` start a ClientHello? One byte read: every other segment (HTTP,
 * a TLS record later in a connection) stops here. */
static __always_inline int tls_may_be_hello(struct __sk_buff *skb, __u32 offset)
{
	__u8 type;

	return bpf_skb_load_bytes(skb, offset, &type, 1) == 0 && type == TLS_RECORD_HANDSHAKE;
}

/* Where the first ClientHello's extensions start, from its fixed start at `offset` (the
 * session id, cipher suites and compression methods skipped), and where they end: 0, or -1
 * for anything but a well-formed ClientHello in one record. */
static __always_inline int tls_find_extensions(struct __sk_buff *skb, __u32 offset, struct tls_scratch *scratch)
{
	struct tls_hello_start hello;
	__u32 hello_length, at, end;
	__be16 length;
	__u8 methods;

	if (bpf_skb_load_bytes(skb, offset, &hello, sizeof(hello)) < 0)
		return -1;
	if (hello.record_type != TLS_RECORD_HANDSHAKE || hello.record_major != TLS_VERSION_MAJOR ||
	    hello.handshake_type != TLS_HANDSHAKE_CLIENT_HELLO || hello.client_major != TLS_VERSION_MAJOR ||
	    hello.session_id_length > TLS_SESSION_ID_MAX || bpf_ntohs(hello.record_length) > TLS_RECORD_MAX)
		return -1;
	hello_length = (hello.handshake_length[0] << 16) | (hello.handshake_length[1] << 8) | hello.handshake_length[2];
	/* a ClientHello longer than its record goes on in the next: its extensions are not all here */
	if (TLS_HANDSHAKE_HEADER + hello_length > bpf_ntohs(hello.record_length))
		return -1;
	end = offset + TLS_RECORD_HEADER + TLS_HANDSHAKE_HEADER + hello_length;
	at = offset + sizeof(hello) + hello.session_id_length;
	if (bpf_skb_load_bytes(skb, at, &length, sizeof(length)) < 0 || !length || (bpf_ntohs(length) & 1))
		return -1; /* cipher suites: two bytes each, at least one */
	at += sizeof(length) + bpf_ntohs(length);
	if (bpf_skb_load_bytes(skb, at, &methods, 1) < 0 || !methods)
		return -1;
	at += 1 + methods;
	if (bpf_skb_load_bytes(skb, at, &length, sizeof(length)) < 0)
		return -1;
	at += sizeof(length);
	if (at + bpf_ntohs(length) > end)
		return -1;
	scratch->at = at;
	scratch->end = at + bpf_ntohs(length);
	return 0;
}

/* Read the server name of a ClientHello at `offset` (the start of a TCP segment's payload)
 * into scratch->name as ".host.name" with a NUL after it, its length in scratch->name_len:
 * 0, or -1 when there is none we can read (not a ClientHello, cut short before the name's
 * end, malformed, no host_name in the first KFAULT_TLS_MAX_EXTENSIONS extensions, a name
 * with a NUL in it). Every length is checked against the one around it, so a malformed hello
 * reads no name rather than a wrong one. Bounded loops: the extensions, the name's bytes. */
static __always_inline int tls_read_server_name(struct __sk_buff *skb, __u32 offset, struct tls_scratch *scratch)
{
	struct tls_server_name_start sni;
	struct {
		__be16 type, length;
	} ext;
	__u32 at, data_length, name_length;

	if (tls_find_extensions(skb, offset, scratch) < 0)
		return -1;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_TLS_MAX_EXTENSIONS; i++) {
		at = scratch->at;
		if (at + TLS_EXTENSION_HEADER > scratch->end || bpf_skb_load_bytes(skb, at, &ext, sizeof(ext)) < 0)
			return -1;
		data_length = bpf_ntohs(ext.length);
		if (at + TLS_EXTENSION_HEADER + data_length > scratch->end)
			return -1;
		if (ext.type == bpf_htons(TLS_EXTENSION_SERVER_NAME))
			goto found;
		scratch->at = at + TLS_EXTENSION_HEADER + data_length;
	}
	return -1;
found:
	at = scratch->at + TLS_EXTENSION_HEADER;
	if (data_length < sizeof(sni) || bpf_skb_load_bytes(skb, at, &sni, sizeof(sni)) < 0)
		return -1;
	name_length = bpf_ntohs(sni.name_length);
	/* the first name of the list, a host_name, inside the list, inside the extension */
	if (sni.name_type != TLS_NAME_TYPE_HOST_NAME || sizeof(__be16) + bpf_ntohs(sni.list_length) > data_length ||
	    sizeof(sni) - sizeof(__be16) + name_length > bpf_ntohs(sni.list_length))
		return -1;
	if (name_length < 1 || name_length > TLS_HOST_NAME_MAX)
		return -1;
	/* [1, KFAULT_TLS_NAME_MAX] in the register the helper is given, as 6.1's verifier can see it
	 * (dns_read_name's way): a bound learned from a compare is lost when clang spills the value
	 * before it (seen in httpfault.c on 6.1). The compare above keeps it in name[1..254]. */
	name_length -= 1;
	asm volatile("" : "+r"(name_length));
	name_length = (name_length & (KFAULT_TLS_NAME_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, at + sizeof(sni), &scratch->name[1], name_length) < 0)
		return -1;
	scratch->name[0] = '.';
	if (scratch->name[name_length] == '.')
		name_length -= 1; /* "example.test." is "example.test" (a dot alone is no name) */
	if (!name_length)
		return -1;
	scratch->name[(name_length + 1) & (KFAULT_TLS_NAME_MAX - 1)] = 0;
	scratch->name_len = name_length + 1;
	/* a NUL inside would end the DFA's walk early: "a\0.example.test" is no name */
#pragma clang loop unroll(disable)
	for (__u32 i = 1; i < KFAULT_TLS_NAME_MAX; i++) {
		if (i >= scratch->name_len)
			return 0;
		if (!scratch->name[i])
			return -1;
	}
	return 0;
}

/* Does the server name read (tls_read_server_name) match `dfa`? */
static __always_inline int tls_name_matches(const struct kfault_io_dfa *dfa, const struct tls_scratch *scratch)
{
	_Static_assert(KFAULT_TLS_NAME_MAX == KFAULT_IO_PATH_MAX, "dfa_accepts_text walks KFAULT_IO_PATH_MAX bytes");
	return dfa_accepts_text(dfa, scratch->name);
}

#endif /* KFAULT_LIB_TLS_H */
