// Package agent is the node-side serving engine: it loads the models of a
// repository into a runtime backend, gives each a bounded queue with dynamic
// batching (package batch), and answers the Open Inference Protocol through
// oip.Service. The transports in oip/rest and oip/grpcsvc put a Manager on
// the wire.
//
// # Encoded images
//
// A device on a slow link can send an image input as the JPEG or PNG file
// it already has instead of a large FP32 tensor, when the model's
// config.yaml has a preprocess entry for that input:
//
//	preprocess:
//	  image:                  # the model input's name
//	    width: 224            # 0 or absent: the input's fixed width
//	    height: 224           # likewise
//	    layout: NCHW          # NCHW | NHWC; absent: inferred from the shape
//	    scale: 0.00392156862  # absent: 1/255 (1 for UINT8 inputs)
//	    mean: [0.485, 0.456, 0.406]  # absent: 0
//	    std: [0.229, 0.224, 0.225]   # absent: 1
//	    bgr: false            # feed channels as B, G, R
//	    datatype: FP32        # FP32 | FP16 | UINT8; absent: the input's
//
// The entry is checked against the model when it loads (the input must
// exist and be 4-D with 3 colour channels, sizes must agree with fixed
// dimensions); a bad entry leaves the model UNAVAILABLE with the reason.
// Such an input then takes either its ordinary tensor, unchanged, or a
// BYTES tensor of shape [N] whose elements are encoded images. N may exceed
// 1 only when the input's batch dimension is dynamic, and is at most
// MinImagesPerRequest or max_batch_size, whichever is larger. Each image
// is decoded in pure Go (package preprocess; other formats refused),
// resized bilinearly, normalised and stacked into the [N,...] tensor the
// model declares, on the request's goroutine before the request is queued,
// so requests decode in parallel and the model's executors only run the
// model. Decoding is bounded before any pixel is allocated: the header
// says what the image will take (a small 16-bit or progressive file can
// claim hundreds of MiB); one image may take preprocess.MaxImageBytes and
// all requests' images decoding at once Config.ImageDecodeBytes, for
// which a request waits within its deadline. Model metadata keeps describing the model's real input. Over REST
// send the images in the binary tensor extension (JSON strings cannot
// carry arbitrary bytes); over gRPC as raw input contents.
//
// # Timings
//
// Every successful Infer response carries server-side timings as int64
// microsecond parameters: queue_us (QueueParameter, waiting for an
// executor), compute_us (ComputeParameter, the execution that ran the
// request, its whole batch) and, when images were decoded, preprocess_us
// (PreprocessParameter). Both transports and the gateway pass them on, so
// a client can tell the node's time from the network's.
package agent
