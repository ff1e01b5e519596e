package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/ebpfvm"
)

// LoadObject returns a parser that runs the eBPF socket-filter program named
// program from the ELF object at path, as built by clang -target bpf. program
// is the program's function name or, if no function has that name, the name
// of the ELF section holding exactly one program (e.g. "socket/http2").
//
// The object is decoded with github.com/cilium/ebpf without a kernel and the
// program is validated and decoded once for kcm's interpreter. The program
// sees the message's bytes so far as the packet: LD_ABS/LD_IND loads in
// network byte order (a load out of range returns 0, "need more", like the
// kernel), bpf_skb_load_bytes (the only helper), a 512-byte stack and a
// read-only __sk_buff whose len is the number of bytes buffered (its other
// fields read as zero, except the direct packet pointers data, data_end and
// data_meta, which socket filters cannot use: reading them is a run-time
// error, so the psock fails instead of waiting forever). Maps,
// bpf-to-bpf calls, other helpers, big-endian objects (clang -target
// bpfeb, which a little-endian kernel refuses too) and constant loads in
// the network or link-layer header (SKF_NET_OFF, SKF_LL_OFF) are
// rejected; errors wrap
// ErrInvalidProgram, ErrNoProgram when no program goes by that name, or
// the decoder's error for unreadable files.
//
// The parser is safe for concurrent use and does not allocate on success.
func LoadObject(path, program string) (kcm.Parser, error) {
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, fmt.Errorf("bpf: load %s: %w", path, err)
	}
	ps, err := findProgram(spec, program)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	if ps.ByteOrder != nil && ps.ByteOrder != binary.LittleEndian {
		// Its memory is big-endian: a little-endian kernel refuses it,
		// and so does kcm, which runs it with little-endian memory.
		return nil, fmt.Errorf("%w: %s: program %s is %s (clang -target bpfeb); only little-endian programs run", ErrInvalidProgram, path, ps.Name, ps.ByteOrder)
	}
	if ps.Type != ebpf.SocketFilter {
		return nil, fmt.Errorf("%w: %s: program %s has type %s, want a socket filter (SEC(\"socket\"))", ErrInvalidProgram, path, ps.Name, ps.Type)
	}
	for i, ins := range ps.Instructions {
		switch {
		case ins.IsFunctionCall() || ins.IsLoadOfFunctionPointer():
			return nil, fmt.Errorf("%w: %s: program %s: instruction %d: bpf-to-bpf calls are not supported", ErrInvalidProgram, path, ps.Name, i)
		case ins.IsLoadFromMap() || ins.Reference() != "":
			return nil, fmt.Errorf("%w: %s: program %s: instruction %d: maps and global variables (%s) are not supported", ErrInvalidProgram, path, ps.Name, i, ins.Reference())
		}
	}
	var raw bytes.Buffer
	if err := ps.Instructions.Marshal(&raw, binary.LittleEndian); err != nil {
		return nil, fmt.Errorf("%w: %s: program %s: %w", ErrInvalidProgram, path, ps.Name, err)
	}
	return newEBPF(raw.Bytes(), fmt.Sprintf("%s: program %s", path, ps.Name))
}

// newEBPF validates raw little-endian eBPF bytecode and wraps it as a
// parser.
func newEBPF(raw []byte, name string) (*ebpfParser, error) {
	prog, err := ebpfvm.Load(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidProgram, name, err)
	}
	return &ebpfParser{prog: prog}, nil
}

func findProgram(spec *ebpf.CollectionSpec, name string) (*ebpf.ProgramSpec, error) {
	if ps, ok := spec.Programs[name]; ok {
		return ps, nil
	}
	var found []*ebpf.ProgramSpec
	for _, ps := range spec.Programs {
		if ps.SectionName == name {
			found = append(found, ps)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		names := make([]string, 0, len(spec.Programs))
		for n, ps := range spec.Programs {
			names = append(names, fmt.Sprintf("%s (section %s)", n, ps.SectionName))
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w: no program or section %q; have %v", ErrNoProgram, name, names)
	default:
		return nil, fmt.Errorf("%w: section %q holds %d programs; name the function", ErrNoProgram, name, len(found))
	}
}

// ErrNoProgram is wrapped by LoadObject's error when the object has no
// program of the requested name, or the section name is ambiguous.
var ErrNoProgram = errors.New("bpf: program not found")

type ebpfParser struct{ prog *ebpfvm.Program }

func (p *ebpfParser) Parse(b []byte) (int, error) {
	v, err := p.prog.Run(b)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrProgram, err)
	}
	// The kernel's bpf_prog_run returns u32, which KCM's parse callback
	// returns as int.
	return result(uint32(v))
}
