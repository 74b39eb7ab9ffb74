package ibis_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler/latency/ibis"
)

func dir(t *testing.T) string {
	t.Helper()
	d := ibis.DirForTest(t)
	return d
}

func TestReadSharedFiles(t *testing.T) {
	d := dir(t)
	for _, tc := range []struct {
		file   string
		models int
	}{{ibis.GPUValidation, 3}, {ibis.EdgeTPUValidation, 5}} {
		s, err := ibis.ReadValidationFile(d, tc.file)
		if err != nil {
			t.Fatal(err)
		}
		models := map[string]bool{}
		rounds := map[string]int{}
		for _, x := range s {
			models[x.Model] = true
			rounds[x.Process] = max(rounds[x.Process], x.Round+1)
		}
		if len(models) != tc.models || len(rounds) != 2 || rounds["Sequential"] != 100 || rounds["Concurrent"] != 100 {
			t.Errorf("%s: %d models, rounds %v", tc.file, len(models), rounds)
		}
	}
	w, err := ibis.ReadWorkloadFile(d, ibis.GPUWorkload)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Models) != 11 || w.Models[0].Name != "resnet18" || w.Models[0].SLAMs != 100 || w.Models[0].BackendMemoryMB != 700 {
		t.Errorf("gpu workload: %+v", w.Models)
	}
	if got := w.Models[0].ServiceTimeMs(); got < 10.83 || got > 10.84 {
		t.Errorf("resnet18 service time %v", got)
	}
	e, err := ibis.ReadWorkloadFile(d, ibis.EdgeTPUWorkload)
	if err != nil {
		t.Fatal(err)
	}
	if e.Models[0].Name != "efficientnet-S" || e.Models[0].SwitchOverheadMs != 17.31 {
		t.Errorf("edgetpu workload: %+v", e.Models[0])
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"header", "a,b,c\n", "header"},
		{"value", "model,process_type,response_time\nx,Sequential,-1\n", "line 2"},
		{"fields", "model,process_type,response_time\nx,Sequential\n", "wrong number of fields"},
	} {
		_, err := ibis.ReadValidation(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "models: []\n", "no models"},
		{"rate", "models:\n  - model_name: a\n    service_rate: 0\n    sla: 10\n", "models[0] (a): service_rate"},
		{"sla", "models:\n  - model_name: a\n    service_rate: 10\n", "sla"},
		{"name", "models:\n  - service_rate: 10\n    sla: 5\n", "no model_name"},
	} {
		_, err := ibis.ReadWorkload(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
