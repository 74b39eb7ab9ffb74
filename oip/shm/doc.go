// Package shm is Triton's system shared memory extension for accelpool's
// front doors: a client on the server's machine puts tensors in a POSIX
// shared memory object, registers regions of it by name, and then names a
// region (shared_memory_region, shared_memory_offset,
// shared_memory_byte_size) in an input's or a requested output's
// parameters instead of sending bytes. Registry maps the regions; Wrap
// gives any oip.Service the extension (oip.SharedMemory), which the rest
// and grpcsvc transports then offer.
//
// Safety: keys are shm_open names ("/name", opened under /dev/shm without
// following links); every offset and size is checked against the object
// when registering and against the region on each request. Inputs are
// copied out of the mapping into this process's buffers before the model
// sees them, and outputs copied in, with faults turned into errors, so a
// client that truncates its object under a region gets an error rather
// than crashing the server. A region unregistered while requests use it
// is unmapped when they are done. Servers enable it only on request
// (--allow-client-shm), as Triton does: a region is any shared memory
// object the server's user may open.
package shm
