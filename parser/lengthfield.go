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

// ErrConfig is wrapped by the error of an invalid LengthField configuration:
// from NewLengthField and Validate, and from Parse when the LengthField was
// used without either.
var ErrConfig = errors.New("parser: invalid length field configuration")

// maxVarintLen is the longest varint encoding of a uint64.
const maxVarintLen = 10

// MaxOffset is the largest valid LengthField.Offset (1 GiB).
const MaxOffset = 1 << 30

// MaxAdjust is the largest valid magnitude of LengthField.Adjust: 2^61 on
// 64-bit platforms (2^29 on 32-bit ones). Together with MaxOffset it keeps
// the header arithmetic free of overflow.
const MaxAdjust = math.MaxInt >> 2

// validSizes has bit s set for each valid fixed field size s.
const validSizes = 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<8

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
// max(MinLength, Offset+fieldBytes) (the header the field was read from) is
// kcm.ErrBadLength, and a total above MaxLength (or above the largest int)
// is kcm.ErrMessageTooBig. Both are wrapped with the offending value.
//
// A LengthField is a plain value: use it directly as a kcm.Parser (a struct
// literal works, by value or by pointer), or build it with NewLengthField to
// have an invalid configuration reported before the first message. Parse
// computes from the exported fields on every call (there is no hidden
// state), reports an invalid configuration as an error wrapping ErrConfig,
// does not allocate unless it returns an error, and is safe for concurrent
// use as long as the fields are not being changed.
type LengthField struct {
	// Offset is the number of bytes before the length field, at most
	// MaxOffset.
	Offset int
	// Size is the field width in bytes: 1, 2, 3, 4 or 8, or Varint.
	Size int
	// LittleEndian selects little-endian fields; the default is network
	// byte order (big-endian). Ignored for Size 1 and Varint.
	LittleEndian bool
	// Adjust is added to the field value (Netty's lengthAdjustment, Tokio's
	// length_adjustment); it may be negative. Its magnitude is at most
	// MaxAdjust.
	Adjust int
	// IncludesHeader says the field value counts the bytes up to and
	// including the length field itself (Offset + field bytes).
	IncludesHeader bool
	// MinLength is the smallest valid total message length. Values below
	// the header size (Offset plus the field bytes) are raised to it.
	MinLength int
	// MaxLength is the largest valid total message length, checked on the
	// whole adjusted message; 0 means no limit beyond the largest int (the
	// psock's maximum message size still applies).
	MaxLength int
}

// NewLengthField validates cfg (see Validate) and returns it ready to
// parse. The error wraps ErrConfig and says which setting is wrong.
func NewLengthField(cfg LengthField) (*LengthField, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate reports whether f is a usable configuration: it returns nil, or
// an error wrapping ErrConfig for an Offset outside [0, MaxOffset], a Size
// other than 1, 2, 3, 4, 8 or Varint, an Adjust whose magnitude exceeds
// MaxAdjust, a negative MinLength or MaxLength, or a configuration under
// which no message can be valid: a MaxLength below the header or below
// MinLength, or an Adjust so large that even a zero field value exceeds
// MaxLength. Parse returns the same error for such a configuration.
func (f LengthField) Validate() error {
	if f.Offset < 0 || f.Offset > MaxOffset {
		return fmt.Errorf("%w: offset %d out of range [0, %d]", ErrConfig, f.Offset, MaxOffset)
	}
	fieldBytes := f.Size
	switch f.Size {
	case 1, 2, 3, 4, 8:
	case Varint:
		fieldBytes = 1 // shortest encoding
	default:
		return fmt.Errorf("%w: field size %d (want 1, 2, 3, 4, 8 or parser.Varint)", ErrConfig, f.Size)
	}
	if f.Adjust > MaxAdjust || f.Adjust < -MaxAdjust {
		return fmt.Errorf("%w: length adjustment %d out of range [%d, %d]", ErrConfig, f.Adjust, -MaxAdjust, MaxAdjust)
	}
	if f.MinLength < 0 {
		return fmt.Errorf("%w: negative minimum length %d", ErrConfig, f.MinLength)
	}
	if f.MaxLength < 0 {
		return fmt.Errorf("%w: negative maximum length %d", ErrConfig, f.MaxLength)
	}
	hdr := f.Offset + fieldBytes
	maxLen := f.maxLen()
	if lo := max(f.MinLength, hdr); maxLen < lo {
		return fmt.Errorf("%w: maximum length %d below the minimum message length %d", ErrConfig, maxLen, lo)
	}
	if smallest := f.fixed(hdr); smallest > maxLen {
		return fmt.Errorf("%w: even a zero length field gives a length of %d, above the maximum %d", ErrConfig, smallest, maxLen)
	}
	return nil
}

// maxLen returns the largest valid total.
func (f LengthField) maxLen() int {
	if f.MaxLength == 0 {
		return math.MaxInt
	}
	return f.MaxLength
}

// fixed returns the constant added to the field value for a header of hdr
// bytes. Within the validated ranges it cannot overflow.
func (f LengthField) fixed(hdr int) int {
	if f.IncludesHeader {
		return f.Adjust
	}
	return f.Adjust + hdr
}

// invalid returns f's configuration error; it is only called when the
// fast checks in Parse failed, which happens exactly when Validate fails.
func (f LengthField) invalid() error {
	if err := f.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("%w: %+v", ErrConfig, f) // unreachable
}

// Parse returns the total length of the message that b starts with, 0 if b
// is too short to hold the length field, or an error wrapping
// kcm.ErrBadLength or kcm.ErrMessageTooBig for an invalid length (or
// ErrConfig for an invalid configuration, see Validate).
func (f LengthField) Parse(b []byte) (int, error) { return f.parse(b) }

// parse is Parse on a pointer, so that the interface wrapper of
// (*LengthField).Parse passes f without copying its fields through
// registers and back to memory.
func (f *LengthField) parse(b []byte) (int, error) {
	off, size := f.Offset, f.Size
	if uint(off) > MaxOffset || uint(size) > 8 || validSizes>>uint(size)&1 == 0 {
		if size == Varint {
			return f.parseVarint(b)
		}
		return 0, f.invalid()
	}
	// The same arithmetic as maxLen and fixed, on locals: calling
	// value-receiver methods here would copy f through memory.
	hdr := off + size
	minLen, maxLen, adjust := f.MinLength, f.MaxLength, f.Adjust
	if maxLen == 0 {
		maxLen = math.MaxInt
	}
	lo := max(minLen, hdr)
	fixed := adjust
	if !f.IncludesHeader {
		fixed += hdr
	}
	if minLen < 0 || maxLen < lo || fixed > maxLen || uint(adjust+MaxAdjust) > 2*MaxAdjust {
		return 0, f.invalid()
	}
	if len(b) < hdr {
		return 0, nil
	}
	var v uint64
	p := b[off:hdr]
	if f.LittleEndian {
		switch size {
		case 1:
			v = uint64(p[0])
		case 2:
			v = uint64(binary.LittleEndian.Uint16(p))
		case 3:
			_ = p[2]
			v = uint64(p[2])<<16 | uint64(p[1])<<8 | uint64(p[0])
		case 4:
			v = uint64(binary.LittleEndian.Uint32(p))
		default:
			v = binary.LittleEndian.Uint64(p)
		}
	} else {
		switch size {
		case 1:
			v = uint64(p[0])
		case 2:
			v = uint64(binary.BigEndian.Uint16(p))
		case 3:
			_ = p[2]
			v = uint64(p[0])<<16 | uint64(p[1])<<8 | uint64(p[2])
		case 4:
			v = uint64(binary.BigEndian.Uint32(p))
		default:
			v = binary.BigEndian.Uint64(p)
		}
	}
	// total, inlined by hand.
	if v > uint64(maxLen)-uint64(int64(fixed)) {
		return 0, tooBig(v, fixed, maxLen)
	}
	if t := int(v) + fixed; t >= lo {
		return t, nil
	}
	return 0, badLength(int(v)+fixed, lo)
}

// total returns v + fixed if it lies in [lo, maxLen], with fixed <= maxLen
// and |fixed| small enough that uint64(maxLen) - uint64(fixed) does not wrap.
func total(v uint64, fixed, lo, maxLen int) (int, error) {
	// The largest field value whose total is at most maxLen; exact in
	// uint64 for both signs of fixed.
	if vmax := uint64(maxLen) - uint64(int64(fixed)); v > vmax {
		return 0, tooBig(v, fixed, maxLen)
	}
	// Exact in wrapping int arithmetic, as the result lies in
	// [fixed, maxLen].
	t := int(v) + fixed
	if t < lo {
		return 0, badLength(t, lo)
	}
	return t, nil
}

func (f *LengthField) parseVarint(b []byte) (int, error) {
	off, minLen, maxLen, adjust := f.Offset, f.MinLength, f.MaxLength, f.Adjust
	if maxLen == 0 {
		maxLen = math.MaxInt
	}
	fixed := adjust // with the shortest, 1-byte varint
	if !f.IncludesHeader {
		fixed += off + 1
	}
	if uint(off) > MaxOffset || minLen < 0 || maxLen < max(minLen, off+1) || fixed > maxLen ||
		uint(adjust+MaxAdjust) > 2*MaxAdjust {
		return 0, f.invalid()
	}
	if len(b) <= off {
		return 0, nil
	}
	v, n, err := uvarint(b[off:])
	if n == 0 {
		return 0, err
	}
	if !f.IncludesHeader {
		fixed += n - 1
		if fixed > maxLen {
			return 0, fmt.Errorf("%w: length at least %d exceeds maximum %d", kcm.ErrMessageTooBig, fixed, maxLen)
		}
	}
	return total(v, fixed, max(minLen, off+n), maxLen)
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

func tooBig(v uint64, fixed, maxLen int) error {
	if fixed >= 0 && v > math.MaxUint64-uint64(fixed) {
		return fmt.Errorf("%w: length field %d exceeds maximum %d", kcm.ErrMessageTooBig, v, maxLen)
	}
	return fmt.Errorf("%w: length %d exceeds maximum %d", kcm.ErrMessageTooBig, v+uint64(int64(fixed)), maxLen)
}

func badLength(total, min int) error {
	return fmt.Errorf("%w: length %d below minimum %d", kcm.ErrBadLength, total, min)
}
