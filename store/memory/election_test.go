package memory

import (
	"context"
	"testing"
	"time"

	"github.com/accelpool/accelpool/store"
)

func TestExpireLeadership(t *testing.T) {
	s := New()
	defer s.Close()
	ctx := context.Background()
	a, err := s.Campaign(ctx, "e", "a")
	if err != nil {
		t.Fatal(err)
	}
	bc := make(chan store.Leadership, 1)
	go func() {
		b, err := s.Campaign(ctx, "e", "b")
		if err != nil {
			t.Error(err)
		}
		bc <- b
	}()
	for queued := false; !queued; {
		s.mu.Lock()
		queued = len(s.elections["e"].queue) == 1
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	if !s.ExpireLeadership("e") {
		t.Fatal("ExpireLeadership found no leader")
	}
	<-a.Lost()
	b := <-bc
	if id, err := s.Leader(ctx, "e"); err != nil || id != "b" {
		t.Fatalf("Leader = %q, %v; want b", id, err)
	}
	select {
	case <-b.Lost():
		t.Fatal("b lost leadership")
	default:
	}
	if s.ExpireLeadership("nope") {
		t.Fatal("ExpireLeadership of an unknown election reported a leader")
	}
}
