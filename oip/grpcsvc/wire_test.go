package grpcsvc

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/accelpool/accelpool/api/inference"
)

// TestWireFieldNumbers pins the field numbers and kinds shared with KServe's
// grpc_predict_v2.proto and Triton's grpc_service.proto: changing one breaks
// every existing client.
func TestWireFieldNumbers(t *testing.T) {
	type f struct {
		name   string
		number protoreflect.FieldNumber
		kind   protoreflect.Kind
	}
	want := map[string][]f{
		"inference.InferParameter": {
			{"bool_param", 1, protoreflect.BoolKind}, {"int64_param", 2, protoreflect.Int64Kind},
			{"string_param", 3, protoreflect.StringKind}, {"double_param", 4, protoreflect.DoubleKind},
			{"uint64_param", 5, protoreflect.Uint64Kind}},
		"inference.InferTensorContents": {
			{"bool_contents", 1, protoreflect.BoolKind}, {"int_contents", 2, protoreflect.Int32Kind},
			{"int64_contents", 3, protoreflect.Int64Kind}, {"uint_contents", 4, protoreflect.Uint32Kind},
			{"uint64_contents", 5, protoreflect.Uint64Kind}, {"fp32_contents", 6, protoreflect.FloatKind},
			{"fp64_contents", 7, protoreflect.DoubleKind}, {"bytes_contents", 8, protoreflect.BytesKind}},
		"inference.ModelInferRequest": {
			{"model_name", 1, protoreflect.StringKind}, {"model_version", 2, protoreflect.StringKind},
			{"id", 3, protoreflect.StringKind}, {"parameters", 4, protoreflect.MessageKind},
			{"inputs", 5, protoreflect.MessageKind}, {"outputs", 6, protoreflect.MessageKind},
			{"raw_input_contents", 7, protoreflect.BytesKind}},
		"inference.ModelInferRequest.InferInputTensor": {
			{"name", 1, protoreflect.StringKind}, {"datatype", 2, protoreflect.StringKind},
			{"shape", 3, protoreflect.Int64Kind}, {"parameters", 4, protoreflect.MessageKind},
			{"contents", 5, protoreflect.MessageKind}},
		"inference.ModelInferRequest.InferRequestedOutputTensor": {
			{"name", 1, protoreflect.StringKind}, {"parameters", 2, protoreflect.MessageKind}},
		"inference.ModelInferResponse": {
			{"model_name", 1, protoreflect.StringKind}, {"model_version", 2, protoreflect.StringKind},
			{"id", 3, protoreflect.StringKind}, {"parameters", 4, protoreflect.MessageKind},
			{"outputs", 5, protoreflect.MessageKind}, {"raw_output_contents", 6, protoreflect.BytesKind}},
		"inference.ModelInferResponse.InferOutputTensor": {
			{"name", 1, protoreflect.StringKind}, {"datatype", 2, protoreflect.StringKind},
			{"shape", 3, protoreflect.Int64Kind}, {"parameters", 4, protoreflect.MessageKind},
			{"contents", 5, protoreflect.MessageKind}},
		"inference.ModelMetadataResponse": {
			{"name", 1, protoreflect.StringKind}, {"versions", 2, protoreflect.StringKind},
			{"platform", 3, protoreflect.StringKind}, {"inputs", 4, protoreflect.MessageKind},
			{"outputs", 5, protoreflect.MessageKind}},
		"inference.ModelMetadataResponse.TensorMetadata": {
			{"name", 1, protoreflect.StringKind}, {"datatype", 2, protoreflect.StringKind},
			{"shape", 3, protoreflect.Int64Kind}},
		"inference.ServerMetadataResponse": {
			{"name", 1, protoreflect.StringKind}, {"version", 2, protoreflect.StringKind},
			{"extensions", 3, protoreflect.StringKind}},
		"inference.ModelReadyRequest":    {{"name", 1, protoreflect.StringKind}, {"version", 2, protoreflect.StringKind}},
		"inference.ModelMetadataRequest": {{"name", 1, protoreflect.StringKind}, {"version", 2, protoreflect.StringKind}},
		"inference.ServerLiveResponse":   {{"live", 1, protoreflect.BoolKind}},
		"inference.ServerReadyResponse":  {{"ready", 1, protoreflect.BoolKind}},
		"inference.ModelReadyResponse":   {{"ready", 1, protoreflect.BoolKind}},
		"inference.RepositoryIndexRequest": {
			{"repository_name", 1, protoreflect.StringKind}, {"ready", 2, protoreflect.BoolKind}},
		"inference.RepositoryIndexResponse": {{"models", 1, protoreflect.MessageKind}},
		"inference.RepositoryIndexResponse.ModelIndex": {
			{"name", 1, protoreflect.StringKind}, {"version", 2, protoreflect.StringKind},
			{"state", 3, protoreflect.StringKind}, {"reason", 4, protoreflect.StringKind}},
		"inference.ModelRepositoryParameter": {
			{"bool_param", 1, protoreflect.BoolKind}, {"int64_param", 2, protoreflect.Int64Kind},
			{"string_param", 3, protoreflect.StringKind}, {"bytes_param", 4, protoreflect.BytesKind}},
		"inference.RepositoryModelLoadRequest": {
			{"repository_name", 1, protoreflect.StringKind}, {"model_name", 2, protoreflect.StringKind},
			{"parameters", 3, protoreflect.MessageKind}},
		"inference.RepositoryModelUnloadRequest": {
			{"repository_name", 1, protoreflect.StringKind}, {"model_name", 2, protoreflect.StringKind},
			{"parameters", 3, protoreflect.MessageKind}},
		"inference.SystemSharedMemoryStatusRequest":  {{"name", 1, protoreflect.StringKind}},
		"inference.SystemSharedMemoryStatusResponse": {{"regions", 1, protoreflect.MessageKind}},
		"inference.SystemSharedMemoryStatusResponse.RegionStatus": {
			{"name", 1, protoreflect.StringKind}, {"key", 2, protoreflect.StringKind},
			{"offset", 3, protoreflect.Uint64Kind}, {"byte_size", 4, protoreflect.Uint64Kind}},
		"inference.SystemSharedMemoryRegisterRequest": {
			{"name", 1, protoreflect.StringKind}, {"key", 2, protoreflect.StringKind},
			{"offset", 3, protoreflect.Uint64Kind}, {"byte_size", 4, protoreflect.Uint64Kind}},
		"inference.SystemSharedMemoryUnregisterRequest": {{"name", 1, protoreflect.StringKind}},
	}
	for msg, fields := range want {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(msg))
		if err != nil {
			t.Errorf("%s: %v", msg, err)
			continue
		}
		md := d.(protoreflect.MessageDescriptor)
		if md.Fields().Len() != len(fields) {
			t.Errorf("%s has %d fields, want %d", msg, md.Fields().Len(), len(fields))
		}
		for _, w := range fields {
			fd := md.Fields().ByName(protoreflect.Name(w.name))
			if fd == nil {
				t.Errorf("%s lacks %s", msg, w.name)
				continue
			}
			if fd.Number() != w.number || fd.Kind() != w.kind {
				t.Errorf("%s.%s is %d %v, want %d %v", msg, w.name, fd.Number(), fd.Kind(), w.number, w.kind)
			}
		}
	}
	sd, err := protoregistry.GlobalFiles.FindDescriptorByName("inference.GRPCInferenceService")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
		"ModelInfer", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
		"SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister"} {
		if sd.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(m)) == nil {
			t.Errorf("service lacks %s", m)
		}
	}
}
