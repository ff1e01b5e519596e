// Programs kcm must refuse to load, or stop at run time, for kcm's tests of
// bpf.LoadObject. Each is valid C for clang -target bpf; the kernel's
// verifier would reject some of them (the loop), kcm's loader the others.
//
// Build (see ../gen.go; the .o is committed so tests do not need clang):
//
//	clang -O2 -g0 -target bpf -c testdata/invalid.c -o testdata/invalid.o

#define SEC(name) __attribute__((section(name), used))

typedef unsigned int __u32;

struct __sk_buff {
	__u32 len;
};

unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

// A legacy map definition (section "maps"), as libbpf's bpf_map_def.
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

SEC("maps")
struct bpf_map_def lengths = {
	.type = 2, // BPF_MAP_TYPE_ARRAY
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;

// Reads its fixed part from a map: maps are not supported.
SEC("socket/map")
int with_map(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u32 *add = bpf_map_lookup_elem(&lengths, &key);
	if (!add)
		return 0;
	return load_word(skb, 0) + *add;
}

// Calls a helper other than bpf_skb_load_bytes.
SEC("socket/random")
int random(struct __sk_buff *skb)
{
	return (bpf_get_prandom_u32() & 0xff) + 1;
}

// A bpf-to-bpf call to a function that is not inlined.
static __attribute__((noinline)) int field(struct __sk_buff *skb)
{
	return load_word(skb, 0);
}

SEC("socket/call")
int call(struct __sk_buff *skb)
{
	return field(skb) + 4;
}

// Spins until the first byte is 0xff, which it never becomes: without the
// instruction cap it would hang its psock.
SEC("socket/loop")
int loop(struct __sk_buff *skb)
{
	volatile __u32 n = 0;
	while (load_byte(skb, 0) != 0xff)
		n++;
	return n;
}

// Not a socket filter: an XDP program.
SEC("xdp")
int xdp_prog(void *ctx)
{
	return 2; // XDP_PASS
}

// Two programs in one section: loadable by function name only.
SEC("socket/twin")
int twin_a(struct __sk_buff *skb) { return load_word(skb, 0) + 4; }

SEC("socket/twin")
int twin_b(struct __sk_buff *skb) { return load_word(skb, 0) + 8; }

char _license[] SEC("license") = "Dual BSD/GPL";
