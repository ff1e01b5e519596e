package parser_test

import (
	"fmt"

	"github.com/gokcm/kcm/parser"
)

// A protocol with a 2-byte type, then a 4-byte big-endian length of the
// payload that follows the header, and at most 1 MiB per message.
func ExampleLengthField() {
	p, err := parser.NewLengthField(parser.LengthField{
		Offset:    2,
		Size:      4,
		MaxLength: 1 << 20,
	})
	if err != nil {
		panic(err)
	}
	stream := []byte{0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 'a', 'b', 'c'}
	fmt.Println(p.Parse(stream[:4])) // field incomplete: need more
	fmt.Println(p.Parse(stream))     // header (6) + payload (3)

	_, err = parser.NewLengthField(parser.LengthField{Size: 5})
	fmt.Println(err)
	// Output:
	// 0 <nil>
	// 9 <nil>
	// parser: invalid length field configuration: field size 5 (want 1, 2, 3, 4, 8 or parser.Varint)
}

// A LengthField needs no constructor: a struct literal is a kcm.Parser.
// Here, a 2-byte little-endian length that counts itself, at offset 1.
func ExampleLengthField_literal() {
	p := parser.LengthField{Offset: 1, Size: 2, LittleEndian: true, IncludesHeader: true}
	fmt.Println(p.Parse([]byte{0x07, 0x05, 0x00, 'a', 'b'}))
	fmt.Println(p.Parse([]byte{0x07, 0x02, 0x00})) // 2 < the 3-byte header
	fmt.Println(parser.LengthField{Size: 5}.Parse([]byte{0, 0, 0, 0, 0}))
	// Output:
	// 5 <nil>
	// 0 kcm: bad message length: length 2 below minimum 3
	// 0 parser: invalid length field configuration: field size 5 (want 1, 2, 3, 4, 8 or parser.Varint)
}

// Protocol buffers streams delimited by a varint length
// (writeDelimitedTo in Java, protodelim in Go).
func ExampleLengthField_varint() {
	p, err := parser.NewLengthField(parser.LengthField{Size: parser.Varint})
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Parse([]byte{0x96}))       // varint incomplete
	fmt.Println(p.Parse([]byte{0x96, 0x01})) // 150 + 2 bytes of varint
	// Output:
	// 0 <nil>
	// 152 <nil>
}

func ExampleHTTP2() {
	p := parser.HTTP2()
	// A SETTINGS frame header announcing 18 bytes of payload.
	fmt.Println(p.Parse([]byte{0x00, 0x00, 0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00}))
	// Output: 27 <nil>
}

func ExampleWebSocket() {
	p := parser.WebSocket()
	// RFC 6455 5.7: a masked text frame "Hello".
	frame := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}
	fmt.Println(p.Parse(frame[:3]))
	fmt.Println(p.Parse(frame))
	// Output:
	// 0 <nil>
	// 11 <nil>
}
