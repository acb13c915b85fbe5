package echo

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
)

// lenientCodec is the server's codec. It is the standard proto codec, except
// that an EchoRequest whose name is not valid UTF-8 is still decoded (proto3
// decoding refuses it, and grpc-go would answer INTERNAL), so that the handler
// can answer INVALID_ARGUMENT with a clear message.
type lenientCodec struct {
	base encoding.CodecV2
}

var _ encoding.CodecV2 = lenientCodec{}

func newLenientCodec() lenientCodec {
	return lenientCodec{base: encoding.GetCodecV2(grpcproto.Name)}
}

func (c lenientCodec) Name() string { return c.base.Name() }

func (c lenientCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.base.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	req, ok := v.(*echov1.EchoRequest)
	if !ok {
		return err
	}
	name, perr := decodeRawName(data.Materialize())
	if perr != nil {
		return err
	}
	req.Reset()
	req.Name = name // may be invalid UTF-8; Echo rejects it
	return nil
}

// decodeRawName decodes field 1 (name) of an EchoRequest without validating
// UTF-8. Unknown fields are skipped; the last occurrence of name wins, as in
// proto decoding.
func decodeRawName(b []byte) (string, error) {
	var name string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", fmt.Errorf("decode echo request tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", fmt.Errorf("decode echo request name: %w", protowire.ParseError(n))
			}
			name = string(v)
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", fmt.Errorf("decode echo request field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return name, nil
}
