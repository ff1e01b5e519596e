// KCM parser programs for kcm's tests: one BPF_PROG_TYPE_SOCKET_FILTER
// program per built-in protocol of package parser, written as one would for
// kernel KCM (SIOCKCMATTACH takes the fd of such a program). They load both
// in the kernel and in kcm's interpreter.
//
// Build (see ../gen.go; the .o is committed so tests do not need clang):
//
//	clang -O2 -g0 -target bpf -c testdata/parsers.c -o testdata/parsers.o
//
// Negative returns are errors, as in the kernel (posted on the TCP socket).

#define SEC(name) __attribute__((section(name), used))

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define EMSGSIZE 90
#define EBADMSG 74

// The start of the kernel's struct __sk_buff (include/uapi/linux/bpf.h);
// only len is read.
struct __sk_buff {
	__u32 len;
};

// Packet loads in network byte order (LD_ABS/LD_IND); out of range ends the
// program with return value 0, i.e. "need more bytes" for KCM.
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;

// The seed programs, exactly as documented for kernel KCM.
SEC("socket/http2")
int http2(struct __sk_buff *skb)
{
	return (load_word(skb, 0) >> 8) + 9;
}

SEC("socket/rds")
int rds(struct __sk_buff *skb)
{
	return load_word(skb, 16) + 40;
}

static inline int int32_prefix(struct __sk_buff *skb)
{
	int n = load_word(skb, 0);
	if (n < 0)
		return -EBADMSG;
	return n + 4;
}

SEC("socket/thrift")
int thrift(struct __sk_buff *skb) { return int32_prefix(skb); }

SEC("socket/kafka")
int kafka(struct __sk_buff *skb) { return int32_prefix(skb); }

SEC("socket/dns")
int dns(struct __sk_buff *skb) { return load_half(skb, 0) + 2; }

SEC("socket/memcached")
int memcached(struct __sk_buff *skb) { return load_word(skb, 8) + 24; }

SEC("socket/postgres")
int postgres(struct __sk_buff *skb)
{
	int n = load_word(skb, 1);
	if (n < 4)
		return -EBADMSG;
	return n + 1;
}

SEC("socket/postgres_startup")
int postgres_startup(struct __sk_buff *skb)
{
	__u32 n = load_word(skb, 0);
	if (n < 8)
		return -EBADMSG;
	if (n > 10000)
		return -EMSGSIZE;
	return n;
}

// MongoDB's length is little-endian: copy it to the stack with the helper
// and read it in host (BPF little-endian) order.
SEC("socket/mongo")
int mongo(struct __sk_buff *skb)
{
	__u32 n;
	if (skb->len < 4)
		return 0;
	if (bpf_skb_load_bytes(skb, 0, &n, sizeof(n)) < 0)
		return 0;
	if (n < 16 || n > 0x7fffffff)
		return -EBADMSG;
	return n;
}

SEC("socket/tls")
int tls(struct __sk_buff *skb)
{
	__u32 n = load_half(skb, 3);
	if (n > (1 << 14) + 2048)
		return -EMSGSIZE;
	return n + 5;
}

SEC("socket/sockperf")
int sockperf(struct __sk_buff *skb)
{
	int n = load_word(skb, 10);
	if (n < 14)
		return -EBADMSG;
	return n;
}

SEC("socket/grpc")
int grpc(struct __sk_buff *skb) { return load_word(skb, 1) + 5; }

SEC("socket/websocket")
int websocket(struct __sk_buff *skb)
{
	if (skb->len < 2)
		return 0;
	__u32 b1 = load_byte(skb, 1);
	__u32 hdr = 2 + (b1 >> 7) * 4;
	__u64 n = b1 & 0x7f;
	if (n == 126) {
		hdr += 2;
		if (skb->len < hdr)
			return 0;
		n = load_half(skb, 2);
	} else if (n == 127) {
		hdr += 8;
		if (skb->len < hdr)
			return 0;
		n = load_word(skb, 2) << 32 | load_word(skb, 6);
		if (n >> 63)
			return -EBADMSG;
		if (n > 0x7fffffff - hdr)
			return -EMSGSIZE;
	} else if (skb->len < hdr) {
		return 0;
	}
	return n + hdr;
}

SEC("socket/mqtt")
int mqtt(struct __sk_buff *skb)
{
	__u32 n = 0;
	for (int i = 1; i < 5; i++) {
		if (i >= skb->len)
			return 0;
		__u32 c = load_byte(skb, i);
		n |= (c & 0x7f) << (7 * (i - 1));
		if (c < 0x80)
			return 1 + i + n;
	}
	return -EBADMSG;
}

char _license[] SEC("license") = "Dual BSD/GPL";
