package cluster

import "time"

// ModelProfile is what the profiler measured of one model on one kind of
// accelerator. The latency models of the scheduler predict from it.
type ModelProfile struct {
	Model           string `json:"model"`
	Digest          string `json:"digest,omitempty"`
	AcceleratorKind string `json:"acceleratorKind"`
	// Host describes the machine measured on (CPU model, cores, threads).
	Host string `json:"host,omitempty"`
	// LoadMs is the time to load the model into the runtime.
	LoadMs float64 `json:"loadMs"`
	// MemoryBytes is the memory the loaded model took (resident set
	// growth across load and a first run, on CPU).
	MemoryBytes int64 `json:"memoryBytes"`
	// ServiceMs is the mean execution time alone, by batch size.
	ServiceMs map[int]float64 `json:"serviceMs"`
	// ServiceP99Ms is the 99th percentile alone, by batch size.
	ServiceP99Ms map[int]float64 `json:"serviceP99Ms,omitempty"`
	// ServiceCV is the coefficient of variation of batch-1 service times.
	ServiceCV float64 `json:"serviceCV"`
	// ConcurrentMs is the mean latency of batch-1 requests when n run at
	// once, by n (processor sharing predicts about n × ServiceMs[1]).
	ConcurrentMs map[int]float64 `json:"concurrentMs,omitempty"`
	// InputShapes are the concrete input shapes measured with.
	InputShapes map[string][]int64 `json:"inputShapes,omitempty"`
	Measured    time.Time          `json:"measured"`
}
