package bpf_test

import (
	"fmt"

	"github.com/gokcm/kcm/bpf"
	xbpf "golang.org/x/net/bpf"
)

// Load the HTTP/2 parser program written for kernel KCM,
// `return (load_word(skb, 0) >> 8) + 9;`, from an object built with
// clang -O2 -target bpf.
func ExampleLoadObject() {
	p, err := bpf.LoadObject("testdata/parsers.o", "http2")
	if err != nil {
		panic(err)
	}
	header := []byte{0x00, 0x00, 0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00}
	fmt.Println(p.Parse(header[:3])) // load_word needs 4 bytes: need more
	fmt.Println(p.Parse(header))     // 18 + 9
	// Output:
	// 0 <nil>
	// 27 <nil>
}

// The same parser as a classic BPF program.
func ExampleClassic() {
	p, err := bpf.Classic([]xbpf.Instruction{
		xbpf.LoadAbsolute{Off: 0, Size: 4},
		xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftRight, Val: 8},
		xbpf.ALUOpConstant{Op: xbpf.ALUOpAdd, Val: 9},
		xbpf.RetA{},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Parse([]byte{0x00, 0x00, 0x12, 0x04}))
	// Output: 27 <nil>
}
