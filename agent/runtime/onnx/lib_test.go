package onnx

import "testing"

// TestTelemetryWanted: only an explicit "off" value of ORT_DISABLE_TELEMETRY
// lets ONNX Runtime's telemetry events through; "true" keeps them off as
// "1" does.
func TestTelemetryWanted(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "1": false, "true": false, "TRUE": false, "yes": false, "anything": false,
		"0": true, "false": true, " False ": true, "no": true, "off": true,
	} {
		if got := telemetryWanted(v); got != want {
			t.Errorf("telemetryWanted(%q) = %v, want %v", v, got, want)
		}
	}
}
