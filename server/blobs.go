package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
)

// Model artifacts live in the store itself, cut into chunks small enough
// for etcd's request limit, so every control-plane replica can serve every
// artifact and an etcd cluster's replication protects them. A blob's meta
// key is written last: an interrupted push leaves no visible artifact.
const chunkSize = 512 << 10

type blobMeta struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Chunks int64  `json:"chunks"`
}

// pushModel stores r (at most limit bytes) as the artifact name and
// returns it. The content is spooled to a temporary file while hashing, so
// the digest is known before anything is written to the store.
func (s *Server) pushModel(ctx context.Context, name string, r io.Reader, limit int64, tmpDir string) (cluster.ModelArtifact, error) {
	if !cluster.ValidModelName(name) {
		return cluster.ModelArtifact{}, errdefs.Invalid(fmt.Sprintf("model name %q: use letters, digits, '.', '_' or '-' (at most 128)", name))
	}
	// The data directory exists only if something else made it (the
	// embedded etcd, a generated token): with external etcd and --token
	// nothing did.
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return cluster.ModelArtifact{}, fmt.Errorf("spool upload: %w", err)
	}
	f, err := os.CreateTemp(tmpDir, "push-*")
	if err != nil {
		return cluster.ModelArtifact{}, fmt.Errorf("spool upload: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err != nil {
		return cluster.ModelArtifact{}, errdefs.Invalid(fmt.Sprintf("reading upload: %v", err))
	}
	switch {
	case n > limit:
		return cluster.ModelArtifact{}, errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("model is larger than the %d-byte limit", limit))
	case n == 0:
		return cluster.ModelArtifact{}, errdefs.Invalid("model file is empty")
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if !s.cfg.AnyModelFormat {
		if err := checkONNX(f); err != nil {
			return cluster.ModelArtifact{}, err
		}
	}
	if _, err := s.store.Get(ctx, blobMetaKey(digest)); errors.Is(err, errdefs.ErrNotFound) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return cluster.ModelArtifact{}, err
		}
		buf := make([]byte, chunkSize)
		var i int64
		for {
			k, rerr := io.ReadFull(f, buf)
			if k > 0 {
				if _, err := s.store.Put(ctx, blobChunkKey(digest, i), buf[:k], store.NoLease); err != nil {
					return cluster.ModelArtifact{}, fmt.Errorf("store chunk %d: %w", i, err)
				}
				i++
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			}
			if rerr != nil {
				return cluster.ModelArtifact{}, rerr
			}
		}
		meta, _ := json.Marshal(blobMeta{Digest: digest, Size: n, Chunks: i})
		if _, err := s.store.Put(ctx, blobMetaKey(digest), meta, store.NoLease); err != nil {
			return cluster.ModelArtifact{}, err
		}
	} else if err != nil {
		return cluster.ModelArtifact{}, err
	}
	art := cluster.ModelArtifact{Name: name, Digest: digest, Size: n, Created: time.Now().UTC(), Format: "onnx"}
	val, _ := json.Marshal(art)
	if _, err := s.store.Put(ctx, modelKey(name), val, store.NoLease); err != nil {
		return cluster.ModelArtifact{}, err
	}
	s.log.Info("model pushed", "model", name, "digest", digest, "bytes", n)
	return art, nil
}

// checkONNX rejects files that are plainly not ONNX models: an ONNX model
// is a protobuf ModelProto whose first field is ir_version (field 1,
// varint), so it starts with byte 0x08.
func checkONNX(f *os.File) error {
	var b [1]byte
	if _, err := f.ReadAt(b[:], 0); err != nil || b[0] != 0x08 {
		return errdefs.Invalid("the file is not an ONNX model (it must start with the ModelProto ir_version field)")
	}
	return nil
}

// blobReader is an io.ReadSeeker over a stored blob, fetching chunks as it
// goes; http.ServeContent uses it to answer Range requests.
type blobReader struct {
	ctx   context.Context
	st    store.Store
	meta  blobMeta
	off   int64
	chunk int64 // index of cur, -1 for none
	cur   []byte
}

func (s *Server) openBlob(ctx context.Context, digest string) (*blobReader, error) {
	if !cluster.ValidDigest(digest) {
		return nil, errdefs.Invalid(fmt.Sprintf("%q is not a digest (want sha256:<64 hex>)", digest))
	}
	kv, err := s.store.Get(ctx, blobMetaKey(digest))
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("no artifact with digest %s", digest))
		}
		return nil, err
	}
	var m blobMeta
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return nil, fmt.Errorf("blob %s meta: %w", digest, err)
	}
	return &blobReader{ctx: ctx, st: s.store, meta: m, chunk: -1}, nil
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.off >= b.meta.Size {
		return 0, io.EOF
	}
	idx := b.off / chunkSize
	if idx != b.chunk {
		kv, err := b.st.Get(b.ctx, blobChunkKey(b.meta.Digest, idx))
		if err != nil {
			return 0, fmt.Errorf("blob %s chunk %d: %w", b.meta.Digest, idx, err)
		}
		b.chunk, b.cur = idx, kv.Value
	}
	n := copy(p, b.cur[b.off-idx*chunkSize:])
	b.off += int64(n)
	return n, nil
}

func (b *blobReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.off
	case io.SeekEnd:
		offset += b.meta.Size
	}
	if offset < 0 {
		return 0, errors.New("seek before start")
	}
	b.off = offset
	return offset, nil
}

// readAll reads a whole blob (tests and small artifacts).
func (b *blobReader) readAll() ([]byte, error) {
	var buf bytes.Buffer
	_, err := io.Copy(&buf, b)
	return buf.Bytes(), err
}
