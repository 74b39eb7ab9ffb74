// See ort.h.
#include "ort.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const OrtApiBase *(*get_api_base)(void);
static const OrtApi *api;

static void set_err(char *err, size_t errlen, const char *what, const char *why) {
	snprintf(err, errlen, "%s: %s", what, why ? why : "unknown error");
}

static void *open_lib(const char *path, char *err, size_t errlen) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		set_err(err, errlen, "dlopen", dlerror());
		return NULL;
	}
	return h;
}

int ap_probe(const char *path, char *err, size_t errlen) {
	void *h = open_lib(path, err, errlen);
	if (h == NULL) {
		return -1;
	}
	if (dlsym(h, "OrtGetApiBase") == NULL) {
		set_err(err, errlen, "not an ONNX Runtime library", "no OrtGetApiBase symbol");
		dlclose(h);
		return -1;
	}
	// Keep the handle: the library is about to be loaded for real, and
	// unloading ONNX Runtime is not something it is built for.
	return 0;
}

uint32_t ap_init(const char *path, uint32_t want, uint32_t min, char *err, size_t errlen) {
	void *h = open_lib(path, err, errlen);
	if (h == NULL) {
		return 0;
	}
	get_api_base = (const OrtApiBase *(*)(void))dlsym(h, "OrtGetApiBase");
	if (get_api_base == NULL) {
		set_err(err, errlen, "not an ONNX Runtime library", "no OrtGetApiBase symbol");
		return 0;
	}
	const OrtApiBase *base = get_api_base();
	for (uint32_t v = want; v >= min && v > 0; v--) {
		const OrtApi *a = base->GetApi(v);
		if (a != NULL) {
			api = a;
			return v;
		}
	}
	snprintf(err, errlen, "ONNX Runtime %s offers no C API version between %u and %u",
	         base->GetVersionString(), min, want);
	return 0;
}

const char *ap_version_string(void) { return get_api_base()->GetVersionString(); }

int ap_error_code(OrtStatus *st) { return (int)api->GetErrorCode(st); }
const char *ap_error_message(OrtStatus *st) { return api->GetErrorMessage(st); }
void ap_release_status(OrtStatus *st) { api->ReleaseStatus(st); }

OrtStatus *ap_create_env(int level, int no_telemetry, OrtEnv **out) {
	OrtStatus *st = api->CreateEnv((OrtLoggingLevel)level, "accelpool", out);
	if (st == NULL && no_telemetry) {
		/* The environment variable stopped what starts with the
		 * environment; this stops the events sessions would log. */
		st = api->DisableTelemetryEvents(*out);
		if (st != NULL) {
			api->ReleaseEnv(*out);
			*out = NULL;
		}
	}
	return st;
}

OrtStatus *ap_default_allocator(OrtAllocator **out) { return api->GetAllocatorWithDefaultOptions(out); }

OrtStatus *ap_cpu_memory_info(OrtMemoryInfo **out) {
	return api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, out);
}

OrtStatus *ap_available_providers(char ***out, int *n) { return api->GetAvailableProviders(out, n); }

void ap_release_available_providers(char **p, int n) {
	OrtStatus *st = api->ReleaseAvailableProviders(p, n);
	if (st != NULL) {
		api->ReleaseStatus(st);
	}
}

OrtStatus *ap_create_session_options(OrtSessionOptions **out) { return api->CreateSessionOptions(out); }
void ap_release_session_options(OrtSessionOptions *so) { api->ReleaseSessionOptions(so); }

OrtStatus *ap_set_threads(OrtSessionOptions *so, int intra, int inter) {
	OrtStatus *st = api->SetIntraOpNumThreads(so, intra);
	if (st != NULL) {
		return st;
	}
	return api->SetInterOpNumThreads(so, inter);
}

OrtStatus *ap_add_config(OrtSessionOptions *so, const char *key, const char *value) {
	return api->AddSessionConfigEntry(so, key, value);
}

OrtStatus *ap_set_optimize_all(OrtSessionOptions *so) {
	return api->SetSessionGraphOptimizationLevel(so, ORT_ENABLE_ALL);
}

OrtStatus *ap_append_cuda(OrtSessionOptions *so, const char *device_id) {
	OrtCUDAProviderOptionsV2 *o = NULL;
	OrtStatus *st = api->CreateCUDAProviderOptions(&o);
	if (st != NULL) {
		return st;
	}
	const char *keys[] = {"device_id"};
	const char *vals[] = {device_id};
	st = api->UpdateCUDAProviderOptions(o, keys, vals, 1);
	if (st == NULL) {
		st = api->SessionOptionsAppendExecutionProvider_CUDA_V2(so, o);
	}
	api->ReleaseCUDAProviderOptions(o);
	return st;
}

OrtStatus *ap_append_tensorrt(OrtSessionOptions *so, const char *device_id) {
	OrtTensorRTProviderOptionsV2 *o = NULL;
	OrtStatus *st = api->CreateTensorRTProviderOptions(&o);
	if (st != NULL) {
		return st;
	}
	const char *keys[] = {"device_id"};
	const char *vals[] = {device_id};
	st = api->UpdateTensorRTProviderOptions(o, keys, vals, 1);
	if (st == NULL) {
		st = api->SessionOptionsAppendExecutionProvider_TensorRT_V2(so, o);
	}
	api->ReleaseTensorRTProviderOptions(o);
	return st;
}

OrtStatus *ap_create_session(OrtEnv *env, const char *path, OrtSessionOptions *so, OrtSession **out) {
	return api->CreateSession(env, path, so, out);
}

void ap_release_session(OrtSession *s) { api->ReleaseSession(s); }

OrtStatus *ap_io_count(OrtSession *s, int is_input, size_t *n) {
	return is_input ? api->SessionGetInputCount(s, n) : api->SessionGetOutputCount(s, n);
}

// tensor_info reads element type and dims from a tensor type-and-shape.
static OrtStatus *tensor_info(const OrtTensorTypeAndShapeInfo *ti, int *elem_type, int64_t **dims,
                              size_t *ndims) {
	ONNXTensorElementDataType et;
	OrtStatus *st = api->GetTensorElementType(ti, &et);
	if (st != NULL) {
		return st;
	}
	*elem_type = (int)et;
	st = api->GetDimensionsCount(ti, ndims);
	if (st != NULL) {
		return st;
	}
	// Allocate at least one slot so that a scalar gets a non-NULL pointer.
	*dims = malloc((*ndims + 1) * sizeof(int64_t));
	if (*dims == NULL) {
		return api->CreateStatus(ORT_FAIL, "out of memory");
	}
	st = api->GetDimensions(ti, *dims, *ndims);
	if (st != NULL) {
		free(*dims);
		*dims = NULL;
	}
	return st;
}

OrtStatus *ap_io_info(OrtSession *s, int is_input, size_t idx, char **name, int *onnx_type,
                      int *elem_type, int64_t **dims, size_t *ndims) {
	*name = NULL;
	*dims = NULL;
	*ndims = 0;
	*elem_type = 0;
	OrtAllocator *a = NULL;
	OrtStatus *st = api->GetAllocatorWithDefaultOptions(&a);
	if (st != NULL) {
		return st;
	}
	char *n = NULL;
	st = is_input ? api->SessionGetInputName(s, idx, a, &n) : api->SessionGetOutputName(s, idx, a, &n);
	if (st != NULL) {
		return st;
	}
	*name = strdup(n);
	st = api->AllocatorFree(a, n);
	if (st != NULL) {
		api->ReleaseStatus(st);
	}
	if (*name == NULL) {
		return api->CreateStatus(ORT_FAIL, "out of memory");
	}

	OrtTypeInfo *ti = NULL;
	st = is_input ? api->SessionGetInputTypeInfo(s, idx, &ti) : api->SessionGetOutputTypeInfo(s, idx, &ti);
	if (st != NULL) {
		return st;
	}
	enum ONNXType ot;
	st = api->GetOnnxTypeFromTypeInfo(ti, &ot);
	if (st == NULL) {
		*onnx_type = (int)ot;
		if (ot == ONNX_TYPE_TENSOR) {
			const OrtTensorTypeAndShapeInfo *tti = NULL;
			st = api->CastTypeInfoToTensorInfo(ti, &tti);
			if (st == NULL && tti != NULL) {
				st = tensor_info(tti, elem_type, dims, ndims);
			}
		}
	}
	api->ReleaseTypeInfo(ti);
	return st;
}

OrtStatus *ap_tensor_over(OrtMemoryInfo *mi, void *data, size_t len, const int64_t *shape,
                          size_t ndims, int elem_type, OrtValue **out) {
	return api->CreateTensorWithDataAsOrtValue(mi, data, len, shape, ndims,
	                                           (ONNXTensorElementDataType)elem_type, out);
}

OrtStatus *ap_empty_tensor(OrtAllocator *a, const int64_t *shape, size_t ndims, int elem_type,
                           OrtValue **out) {
	return api->CreateTensorAsOrtValue(a, shape, ndims, (ONNXTensorElementDataType)elem_type, out);
}

OrtStatus *ap_string_tensor(OrtAllocator *a, const int64_t *shape, size_t ndims, const char *buf,
                            size_t buflen, size_t n, OrtValue **out) {
	*out = NULL;
	OrtValue *v = NULL;
	OrtStatus *st = api->CreateTensorAsOrtValue(a, shape, ndims, ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, &v);
	if (st != NULL) {
		return st;
	}
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		if (buflen - off < 4) {
			api->ReleaseValue(v);
			return api->CreateStatus(ORT_INVALID_ARGUMENT, "BYTES buffer ends inside an element length");
		}
		const unsigned char *p = (const unsigned char *)buf + off;
		size_t l = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
		off += 4;
		if (l > buflen - off) {
			api->ReleaseValue(v);
			return api->CreateStatus(ORT_INVALID_ARGUMENT, "BYTES element runs past the buffer");
		}
		char *dst = NULL;
		st = api->GetResizedStringTensorElementBuffer(v, i, l, &dst);
		if (st != NULL) {
			api->ReleaseValue(v);
			return st;
		}
		if (l > 0) {
			memcpy(dst, buf + off, l);
		}
		off += l;
	}
	*out = v;
	return NULL;
}

OrtStatus *ap_create_run_options(OrtRunOptions **out) { return api->CreateRunOptions(out); }
void ap_release_run_options(OrtRunOptions *ro) { api->ReleaseRunOptions(ro); }

void ap_terminate(OrtRunOptions *ro) {
	OrtStatus *st = api->RunOptionsSetTerminate(ro);
	if (st != NULL) {
		api->ReleaseStatus(st);
	}
}

OrtStatus *ap_run(OrtSession *s, OrtRunOptions *ro, const char *const *in_names,
                  OrtValue *const *in, size_t nin, const char *const *out_names, size_t nout,
                  OrtValue **out) {
	return api->Run(s, ro, in_names, (const OrtValue *const *)in, nin, out_names, nout, out);
}

OrtStatus *ap_value_info(OrtValue *v, int *onnx_type, int *elem_type, int64_t **dims,
                         size_t *ndims, size_t *count, void **data) {
	*dims = NULL;
	*ndims = 0;
	*count = 0;
	*data = NULL;
	enum ONNXType ot;
	OrtStatus *st = api->GetValueType(v, &ot);
	if (st != NULL) {
		return st;
	}
	*onnx_type = (int)ot;
	if (ot != ONNX_TYPE_TENSOR) {
		return NULL;
	}
	OrtTensorTypeAndShapeInfo *ti = NULL;
	st = api->GetTensorTypeAndShape(v, &ti);
	if (st != NULL) {
		return st;
	}
	st = tensor_info(ti, elem_type, dims, ndims);
	if (st == NULL) {
		st = api->GetTensorShapeElementCount(ti, count);
	}
	api->ReleaseTensorTypeAndShapeInfo(ti);
	if (st == NULL && *count > 0 && *elem_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
		st = api->GetTensorMutableData(v, data);
	}
	if (st != NULL) {
		free(*dims);
		*dims = NULL;
	}
	return st;
}

OrtStatus *ap_strings_size(OrtValue *v, size_t count, size_t *size) {
	size_t total = 0;
	OrtStatus *st = api->GetStringTensorDataLength(v, &total);
	if (st != NULL) {
		return st;
	}
	*size = total + 4 * count;
	return NULL;
}

OrtStatus *ap_strings_copy(OrtValue *v, size_t count, char *dst, size_t dstlen) {
	size_t off = 0;
	for (size_t i = 0; i < count; i++) {
		size_t l = 0;
		OrtStatus *st = api->GetStringTensorElementLength(v, i, &l);
		if (st != NULL) {
			return st;
		}
		if (l > 0xffffffffu || dstlen - off < 4 || l > dstlen - off - 4) {
			return api->CreateStatus(ORT_FAIL, "string output does not fit the BYTES layout");
		}
		unsigned char *p = (unsigned char *)dst + off;
		p[0] = (unsigned char)l;
		p[1] = (unsigned char)(l >> 8);
		p[2] = (unsigned char)(l >> 16);
		p[3] = (unsigned char)(l >> 24);
		off += 4;
		if (l > 0) {
			st = api->GetStringTensorElement(v, l, i, dst + off);
			if (st != NULL) {
				return st;
			}
		}
		off += l;
	}
	if (off != dstlen) {
		return api->CreateStatus(ORT_FAIL, "string output size changed while copying");
	}
	return NULL;
}

void ap_release_value(OrtValue *v) { api->ReleaseValue(v); }
