package shm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
)

// DefaultDir is where Linux keeps POSIX shared memory objects: shm_open's
// "/name" is the file DefaultDir/name.
const DefaultDir = "/dev/shm"

// DefaultMaxRegions bounds how many regions are registered at once.
const DefaultMaxRegions = 1024

// Registry holds the registered regions, each mapped into this process.
// A region stays mapped while any request still uses it, even after it is
// unregistered. Safe for concurrent use.
type Registry struct {
	dir        string
	maxRegions int

	mu      sync.Mutex
	regions map[string]*region
}

// region is one mapped region.
type region struct {
	info oip.SharedMemoryRegion
	mem  []byte // the mapping, from the page that holds info.Offset
	data []byte // the region itself: info.ByteSize bytes of mem
	refs int
	gone bool // unregistered: unmap when refs drops to 0
}

// NewRegistry returns an empty registry of objects in dir (DefaultDir if
// empty), holding at most maxRegions (DefaultMaxRegions if ≤ 0).
func NewRegistry(dir string, maxRegions int) *Registry {
	if dir == "" {
		dir = DefaultDir
	}
	if maxRegions <= 0 {
		maxRegions = DefaultMaxRegions
	}
	return &Registry{dir: dir, maxRegions: maxRegions, regions: make(map[string]*region)}
}

// checkKey accepts shm_open's names: "/" and then one file name.
func checkKey(key string) error {
	name, ok := strings.CutPrefix(key, "/")
	switch {
	case !ok:
		return errdefs.Invalid(fmt.Sprintf("shared memory key %q must start with \"/\" (shm_open's name of the object)", key))
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255:
		return errdefs.Invalid(fmt.Sprintf("shared memory key %q is not a shared memory object's name: \"/\" then 1 to 255 characters, no other \"/\"", key))
	}
	return nil
}

// Register maps a region of the object key and records it under r.Name.
func (g *Registry) Register(_ context.Context, r oip.SharedMemoryRegion) error {
	if r.Name == "" {
		return errdefs.Invalid("a shared memory region needs a name")
	}
	if err := checkKey(r.Key); err != nil {
		return err
	}
	if r.ByteSize == 0 {
		return errdefs.Invalid(fmt.Sprintf("shared memory region %q: byte_size is 0", r.Name))
	}
	g.mu.Lock()
	err := g.admitLocked(r.Name)
	g.mu.Unlock()
	if err != nil {
		return err
	}
	mem, data, err := mapRegion(g.dir, r)
	if err != nil {
		return fmt.Errorf("shared memory region %q: %w", r.Name, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Checked again: another registration may have come while mapping.
	if err := g.admitLocked(r.Name); err != nil {
		unmap(mem)
		return err
	}
	g.regions[r.Name] = &region{info: r, mem: mem, data: data}
	return nil
}

// admitLocked tells whether a region called name may be added now.
func (g *Registry) admitLocked(name string) error {
	if _, taken := g.regions[name]; taken {
		return errdefs.New(errdefs.ErrAlreadyExists, fmt.Sprintf("shared memory region %q is already registered; unregister it first", name))
	}
	if len(g.regions) >= g.maxRegions {
		return errdefs.New(errdefs.ErrResourceExhausted, fmt.Sprintf("shared memory region %q: %d regions are registered, the most this server holds", name, g.maxRegions))
	}
	return nil
}

// Unregister removes the region name, or every region when name is "".
// A region in use by a request is unmapped when that request is done.
func (g *Registry) Unregister(_ context.Context, name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if name == "" {
		for n, r := range g.regions {
			g.dropLocked(n, r)
		}
		return nil
	}
	r, ok := g.regions[name]
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("no shared memory region %q is registered", name))
	}
	g.dropLocked(name, r)
	return nil
}

func (g *Registry) dropLocked(name string, r *region) {
	delete(g.regions, name)
	r.gone = true
	if r.refs == 0 {
		unmap(r.mem)
		r.mem, r.data = nil, nil
	}
}

// Status lists the region name, or every region when name is "", by name.
func (g *Registry) Status(_ context.Context, name string) ([]oip.SharedMemoryRegion, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if name != "" {
		r, ok := g.regions[name]
		if !ok {
			return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("no shared memory region %q is registered", name))
		}
		return []oip.SharedMemoryRegion{r.info}, nil
	}
	out := make([]oip.SharedMemoryRegion, 0, len(g.regions))
	for _, n := range slices.Sorted(maps.Keys(g.regions)) {
		out = append(out, g.regions[n].info)
	}
	return out, nil
}

// Close unregisters every region.
func (g *Registry) Close() error { return g.Unregister(context.Background(), "") }

// span is a tensor's bytes in a region, held until release.
type span struct {
	g    *Registry
	r    *region
	data []byte
}

// acquire finds ref's region and checks that ref lies inside it; the
// region stays mapped until the span is released.
func (g *Registry) acquire(where string, ref oip.SharedMemoryRef) (span, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.regions[ref.Region]
	if !ok {
		return span{}, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("%s: no shared memory region %q is registered", where, ref.Region))
	}
	if size := int64(len(r.data)); ref.Offset > size || ref.ByteSize > size-ref.Offset {
		return span{}, errdefs.Invalid(fmt.Sprintf("%s: %d bytes at offset %d do not fit in shared memory region %q of %d bytes", where, ref.ByteSize, ref.Offset, ref.Region, size))
	}
	r.refs++
	return span{g: g, r: r, data: r.data[ref.Offset : ref.Offset+ref.ByteSize : ref.Offset+ref.ByteSize]}, nil
}

func (s span) release() {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.r.refs--
	if s.r.gone && s.r.refs == 0 && s.r.mem != nil {
		unmap(s.r.mem)
		s.r.mem, s.r.data = nil, nil
	}
}

// errFault: the object behind a region shrank under the mapping.
var errFault = errors.New("the shared memory object is smaller than when it was registered (truncated?)")

// guardedCopy copies src to dst where either may be a mapping whose object
// was truncated: the fault becomes an error rather than a crash.
func guardedCopy(dst, src []byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errFault, p)
		}
	}()
	copy(dst, src)
	return nil
}
