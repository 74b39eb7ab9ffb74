// Thin C shims over the ONNX Runtime C API for the Go side of package onnx.
//
// The API is a table of function pointers (OrtApi) that cgo cannot call
// directly, so each shim calls one entry, or a few when doing them in C saves
// crossings on the hot path. The library is opened with dlopen, never linked.
// Every shim that can fail returns the OrtStatus* (NULL on success); the Go
// side turns it into an error and releases it.
#ifndef ACCELPOOL_ORT_H
#define ACCELPOOL_ORT_H

#include <stddef.h>
#include <stdint.h>

#include "onnxruntime_c_api.h"

// ap_probe opens path with dlopen and checks that it exports OrtGetApiBase.
// It returns 0 on success, else -1 with a reason in err.
int ap_probe(const char *path, char *err, size_t errlen);

// ap_init opens path, then asks for the highest API version from want down
// to min. It returns the version obtained, or 0 with a reason in err.
uint32_t ap_init(const char *path, uint32_t want, uint32_t min, char *err, size_t errlen);
const char *ap_version_string(void);

int ap_error_code(OrtStatus *st);
const char *ap_error_message(OrtStatus *st);
void ap_release_status(OrtStatus *st);

OrtStatus *ap_create_env(int level, int no_telemetry, OrtEnv **out);
OrtStatus *ap_default_allocator(OrtAllocator **out);
OrtStatus *ap_cpu_memory_info(OrtMemoryInfo **out);

OrtStatus *ap_available_providers(char ***out, int *n);
void ap_release_available_providers(char **p, int n);

OrtStatus *ap_create_session_options(OrtSessionOptions **out);
void ap_release_session_options(OrtSessionOptions *so);
OrtStatus *ap_set_threads(OrtSessionOptions *so, int intra, int inter);
OrtStatus *ap_add_config(OrtSessionOptions *so, const char *key, const char *value);
OrtStatus *ap_set_optimize_all(OrtSessionOptions *so);
OrtStatus *ap_append_cuda(OrtSessionOptions *so, const char *device_id);
OrtStatus *ap_append_tensorrt(OrtSessionOptions *so, const char *device_id);

OrtStatus *ap_create_session(OrtEnv *env, const char *path, OrtSessionOptions *so, OrtSession **out);
void ap_release_session(OrtSession *s);

// ap_io_count counts inputs (is_input != 0) or outputs.
OrtStatus *ap_io_count(OrtSession *s, int is_input, size_t *n);

// ap_io_info describes input or output idx. *name and *dims are malloc'd
// (free both with free); *onnx_type is an ONNXType and *elem_type an
// ONNXTensorElementDataType, meaningful only for tensors.
OrtStatus *ap_io_info(OrtSession *s, int is_input, size_t idx, char **name, int *onnx_type,
                      int *elem_type, int64_t **dims, size_t *ndims);

// ap_tensor_over creates a tensor that uses data in place (no copy).
OrtStatus *ap_tensor_over(OrtMemoryInfo *mi, void *data, size_t len, const int64_t *shape,
                          size_t ndims, int elem_type, OrtValue **out);

// ap_string_tensor creates a string tensor of n elements from the
// length-prefixed layout (4-byte little-endian length, then the bytes) in
// buf, which the caller has validated.
OrtStatus *ap_string_tensor(OrtAllocator *a, const int64_t *shape, size_t ndims, const char *buf,
                            size_t buflen, size_t n, OrtValue **out);

// ap_empty_tensor allocates a tensor with ORT's allocator (used for zero
// elements, where there is no buffer to point at).
OrtStatus *ap_empty_tensor(OrtAllocator *a, const int64_t *shape, size_t ndims, int elem_type,
                           OrtValue **out);

OrtStatus *ap_create_run_options(OrtRunOptions **out);
void ap_release_run_options(OrtRunOptions *ro);
void ap_terminate(OrtRunOptions *ro);

OrtStatus *ap_run(OrtSession *s, OrtRunOptions *ro, const char *const *in_names,
                  OrtValue *const *in, size_t nin, const char *const *out_names, size_t nout,
                  OrtValue **out);

// ap_value_info describes an output value. *dims is malloc'd (free it);
// *data points into the value and is valid until it is released.
OrtStatus *ap_value_info(OrtValue *v, int *onnx_type, int *elem_type, int64_t **dims,
                         size_t *ndims, size_t *count, void **data);

// ap_strings_size is the byte size of a string tensor in the length-prefixed
// layout; ap_strings_copy writes that layout into dst.
OrtStatus *ap_strings_size(OrtValue *v, size_t count, size_t *size);
OrtStatus *ap_strings_copy(OrtValue *v, size_t count, char *dst, size_t dstlen);

void ap_release_value(OrtValue *v);

#endif
