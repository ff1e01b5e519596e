// Package bpf runs kernel KCM parser programs as kcm parsers.
//
// # Place in the architecture
//
// A kcm psock hands the bytes of the next message, starting at its first
// byte, to a kcm.Parser, which returns the message length (or 0 for "need
// more", or an error); the psock cuts the message out and delivers it:
//
//	bytes in -> parser -> message -> socket
//
// Kernel KCM's parser is a BPF program attached with SIOCKCMATTACH. This
// package makes such programs kcm.Parsers, so a program written for the
// kernel runs unchanged in userspace:
//
//   - Classic takes classic BPF (golang.org/x/net/bpf instructions) and runs
//     it in the x/net/bpf virtual machine.
//   - LoadObject takes an eBPF socket-filter program from an ELF object built
//     by clang -target bpf, decoded with github.com/cilium/ebpf (no kernel is
//     needed) and run by kcm's own interpreter (internal/ebpfvm).
//
// Both map the program's 32-bit return value as the kernel does: it is an
// int, so values of 0x80000000 and above are negative and mean an error
// (reported wrapping ErrProgram); 0 means "need more bytes", including when
// the program read past the buffered bytes (the kernel returns 0 then). A
// positive value is the message length and is returned as is; a length that
// contradicts bytes already seen is caught by the psock, as in the kernel
// (bad_hdr_len). Package parser has native parsers for the common protocols,
// which are several times faster.
//
// # Safety
//
// Programs are validated when loaded and every memory access is bounded at
// run time; an eBPF run is also capped in executed instructions, so a looping
// program fails with ErrStepLimit instead of hanging its psock.
package bpf
