package parser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/gokcm/kcm"
)

// Varint is the LengthField.Size of an unsigned base-128 varint length field
// as used by protocol buffers: 1 to 10 bytes, least significant group first,
// high bit set on every byte but the last.
const Varint = -1

// ErrConfig is wrapped by the error NewLengthField returns for an invalid
// configuration, and by Parse on a LengthField that NewLengthField did not
// build.
var ErrConfig = errors.New("parser: invalid length field configuration")

// maxVarintLen is the longest varint encoding of a uint64.
const maxVarintLen = 10

// maxOffset bounds LengthField.Offset so that header arithmetic cannot
// overflow.
const maxOffset = math.MaxInt32

// maxAdjust bounds |LengthField.Adjust| for the same reason.
const maxAdjust = 1 << 62

// LengthField parses messages whose header carries their length in a field
// at a fixed offset: the union of Netty's LengthFieldBasedFrameDecoder and
// Tokio's LengthDelimitedCodec (without byte stripping, which is not a
// parser's job), plus unsigned varint fields and a minimum length.
//
// The message's total length is computed from the field value v as
//
//	v + Adjust                        if IncludesHeader
//	Offset + fieldBytes + v + Adjust  otherwise
//
// where fieldBytes is Size, or the number of bytes the varint took. Parse
// returns 0 until Offset+fieldBytes bytes are available; a total below
// max(MinLength, Offset+fieldBytes) is kcm.ErrBadLength, and a total above
// MaxLength (or above the largest int) is kcm.ErrMessageTooBig. Both are
// wrapped with the offending value.
//
// Build a LengthField with NewLengthField, which validates the configuration
// and precomputes what Parse needs; Parse on a LengthField that
// NewLengthField did not return fails with ErrConfig. Changing the exported
// fields of a built LengthField does not change how it parses. A built
// LengthField is immutable and safe for concurrent use; Parse does not
// allocate unless it returns an error.
type LengthField struct {
	// Offset is the number of bytes before the length field.
	Offset int
	// Size is the field width in bytes: 1, 2, 3, 4 or 8, or Varint.
	Size int
	// LittleEndian selects little-endian fields; the default is network
	// byte order (big-endian). Ignored for Size 1 and Varint.
	LittleEndian bool
	// Adjust is added to the field value (Netty's lengthAdjustment, Tokio's
	// length_adjustment); it may be negative.
	Adjust int
	// IncludesHeader says the field value counts the bytes up to and
	// including the length field itself.
	IncludesHeader bool
	// MinLength is the smallest valid total message length. Values below
	// the header size (Offset plus the field bytes) are raised to it.
	MinLength int
	// MaxLength is the largest valid total message length; 0 means no
	// limit beyond the largest int (the psock's maximum message size still
	// applies).
	MaxLength int

	kind    uint8  // field decoder; 0 = not built
	off     int    // Offset
	hdr     int    // Offset + Size (Offset + 1 for Varint)
	min     int64  // smallest valid total (>= hdr for fixed sizes)
	fixed   int64  // constant added to the field value
	vmax    uint64 // largest field value whose total is <= maxTotal
	max     int64  // largest valid total
	addVlen bool   // varint: add the varint's byte count to the total
}

const (
	kindNone uint8 = iota
	kindU8
	kindBE16
	kindBE24
	kindBE32
	kindBE64
	kindLE16
	kindLE24
	kindLE32
	kindLE64
	kindVarint
)

// NewLengthField validates cfg and returns a LengthField ready to parse. The
// error wraps ErrConfig and says which setting is wrong: a negative or huge
// Offset, a Size other than 1, 2, 3, 4, 8 or Varint, a negative MinLength or
// MaxLength, an Adjust whose magnitude exceeds 2^62, a MinLength above
// MaxLength, or a MaxLength smaller than the header (no message could be
// valid).
func NewLengthField(cfg LengthField) (*LengthField, error) {
	f := cfg
	if cfg.Offset < 0 || cfg.Offset > maxOffset {
		return nil, fmt.Errorf("%w: offset %d out of range [0, %d]", ErrConfig, cfg.Offset, maxOffset)
	}
	size := cfg.Size
	switch cfg.Size {
	case 1:
		f.kind = kindU8
	case 2:
		f.kind = pick(cfg.LittleEndian, kindLE16, kindBE16)
	case 3:
		f.kind = pick(cfg.LittleEndian, kindLE24, kindBE24)
	case 4:
		f.kind = pick(cfg.LittleEndian, kindLE32, kindBE32)
	case 8:
		f.kind = pick(cfg.LittleEndian, kindLE64, kindBE64)
	case Varint:
		f.kind = kindVarint
		size = 1 // shortest encoding
	default:
		return nil, fmt.Errorf("%w: field size %d (want 1, 2, 3, 4, 8 or parser.Varint)", ErrConfig, cfg.Size)
	}
	if cfg.Adjust > maxAdjust || cfg.Adjust < -maxAdjust {
		return nil, fmt.Errorf("%w: length adjustment %d out of range [-2^62, 2^62]", ErrConfig, cfg.Adjust)
	}
	if cfg.MinLength < 0 {
		return nil, fmt.Errorf("%w: negative minimum length %d", ErrConfig, cfg.MinLength)
	}
	if cfg.MaxLength < 0 {
		return nil, fmt.Errorf("%w: negative maximum length %d", ErrConfig, cfg.MaxLength)
	}
	f.off = cfg.Offset
	f.hdr = cfg.Offset + size
	f.max = math.MaxInt
	if cfg.MaxLength > 0 {
		f.max = int64(cfg.MaxLength)
	}
	f.min = int64(max(cfg.MinLength, f.hdr))
	if f.max < f.min {
		return nil, fmt.Errorf("%w: maximum length %d below the minimum message length %d", ErrConfig, f.max, f.min)
	}
	f.fixed = int64(cfg.Adjust)
	if !cfg.IncludesHeader {
		if f.kind == kindVarint {
			f.fixed += int64(cfg.Offset)
			f.addVlen = true
		} else {
			f.fixed += int64(f.hdr)
		}
	}
	if f.fixed >= 0 {
		if f.fixed > f.max {
			// Even a zero field value would exceed the maximum: every
			// message is too big.
			return nil, fmt.Errorf("%w: fixed part of the length %d exceeds the maximum length %d", ErrConfig, f.fixed, f.max)
		}
		f.vmax = uint64(f.max - f.fixed)
	} else {
		f.vmax = uint64(f.max) + uint64(-f.fixed)
	}
	return &f, nil
}

func pick(le bool, l, b uint8) uint8 {
	if le {
		return l
	}
	return b
}

// Parse returns the total length of the message that b starts with, 0 if b
// is too short to hold the length field, or an error wrapping
// kcm.ErrBadLength or kcm.ErrMessageTooBig for an invalid length.
func (f *LengthField) Parse(b []byte) (int, error) {
	if len(b) < f.hdr {
		return 0, nil
	}
	var v uint64
	p := b[f.off:f.hdr]
	switch f.kind {
	case kindU8:
		v = uint64(p[0])
	case kindBE16:
		v = uint64(binary.BigEndian.Uint16(p))
	case kindBE24:
		_ = p[2]
		v = uint64(p[0])<<16 | uint64(p[1])<<8 | uint64(p[2])
	case kindBE32:
		v = uint64(binary.BigEndian.Uint32(p))
	case kindBE64:
		v = binary.BigEndian.Uint64(p)
	case kindLE16:
		v = uint64(binary.LittleEndian.Uint16(p))
	case kindLE24:
		_ = p[2]
		v = uint64(p[2])<<16 | uint64(p[1])<<8 | uint64(p[0])
	case kindLE32:
		v = uint64(binary.LittleEndian.Uint32(p))
	case kindLE64:
		v = binary.LittleEndian.Uint64(p)
	case kindVarint:
		return f.parseVarint(b)
	default:
		return 0, fmt.Errorf("%w: LengthField not built by NewLengthField", ErrConfig)
	}
	if v > f.vmax {
		return 0, tooBig(v, f.fixed, f.max)
	}
	total := int64(v + uint64(f.fixed)) // exact: f.fixed <= total <= f.max
	if total < f.min {
		return 0, badLength(total, f.min)
	}
	return int(total), nil
}

func (f *LengthField) parseVarint(b []byte) (int, error) {
	v, n, err := uvarint(b[f.off:])
	if n == 0 {
		return 0, err
	}
	if v > f.vmax {
		return 0, tooBig(v, f.fixed, f.max)
	}
	total := int64(v + uint64(f.fixed))
	if f.addVlen {
		if total > f.max-int64(n) {
			return 0, fmt.Errorf("%w: length %d exceeds maximum %d", kcm.ErrMessageTooBig, total+int64(n), f.max)
		}
		total += int64(n)
	}
	if lo := max(f.min, int64(f.off+n)); total < lo {
		return 0, badLength(total, lo)
	}
	return int(total), nil
}

// uvarint decodes an unsigned base-128 varint. It returns n == 0 with a nil
// error when b ends inside the varint, and n == 0 with an error wrapping
// kcm.ErrBadLength when the encoding is longer than 10 bytes or overflows 64
// bits.
func uvarint(b []byte) (v uint64, n int, err error) {
	var shift uint
	for i, c := range b {
		if i == maxVarintLen-1 && c > 1 {
			return 0, 0, fmt.Errorf("%w: varint length overflows 64 bits", kcm.ErrBadLength)
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, nil
}

func tooBig(v uint64, fixed, maxLen int64) error {
	if fixed >= 0 && v > math.MaxUint64-uint64(fixed) {
		return fmt.Errorf("%w: length field %d exceeds maximum %d", kcm.ErrMessageTooBig, v, maxLen)
	}
	return fmt.Errorf("%w: length %d exceeds maximum %d", kcm.ErrMessageTooBig, v+uint64(fixed), maxLen)
}

func badLength(total, min int64) error {
	return fmt.Errorf("%w: length %d below minimum %d", kcm.ErrBadLength, total, min)
}
