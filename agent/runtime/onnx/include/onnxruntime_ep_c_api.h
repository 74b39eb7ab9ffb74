/* accelpool does not use ONNX Runtime's plugin execution-provider API. This
 * empty file stands in for the header of that name so that the #include at
 * the end of onnxruntime_c_api.h resolves; nothing in accelpool needs its
 * declarations. */
