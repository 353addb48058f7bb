package alert_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/rediacc/rediacc/internal/alert"
)

// A receiver checks the signature on the raw body before trusting it.
func ExampleVerify() {
	secret := []byte("shared-secret")
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		body, _ := io.ReadAll(r.Body)
		if !alert.Verify(secret, body, r.Header.Get(alert.HeaderSignature)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		fmt.Println(r.Header.Get(alert.HeaderEvent), "signature ok")
	}))
	defer srv.Close()

	wh, err := alert.NewWebhook(alert.WebhookConfig{URL: srv.URL, Secret: secret})
	if err != nil {
		panic(err)
	}
	wh.Send(context.Background(), alert.Alert{Kind: alert.KindTaskFailed, TaskID: "t-1", Time: time.Now()})
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wh.Close(ctx)
	fmt.Printf("%+v\n", wh.Stats())
	// Output:
	// task.failed signature ok
	// {Delivered:1 Failed:0 Dropped:0 Retries:0 Queued:0}
}

func ExampleNewRateLimiter() {
	printer := alert.SenderFunc(func(_ context.Context, a alert.Alert) error {
		fmt.Printf("%s %s (suppressed before: %d)\n", a.Kind, a.Machine, a.Suppressed)
		return nil
	})
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	rl := alert.NewRateLimiter(printer, alert.RateLimitConfig{Clock: func() time.Time { return now }})
	a := alert.Alert{Kind: alert.KindMachineUnhealthy, Team: "prod", Machine: "db-1"}
	for range 4 { // a probe failing every minute
		rl.Send(context.Background(), a)
		now = now.Add(time.Minute)
	}
	now = now.Add(time.Minute) // 5 minutes after the first
	rl.Send(context.Background(), a)
	fmt.Println("suppressed:", rl.Suppressed())
	// Output:
	// machine.unhealthy db-1 (suppressed before: 0)
	// machine.unhealthy db-1 (suppressed before: 3)
	// suppressed: 3
}
