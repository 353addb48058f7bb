// Package benchutil holds what the benchmarks of the root package and of
// bench/ share: the bare x/crypto/ssh client every SDK figure is compared
// with, and the CPU readers behind the per-task CPU figures.
package benchutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// ConnsPerHost is how many connections the bare client dials per machine:
// OpenSSH refuses new sessions on a connection with 8 or more in flight
// (MaxSessions 10 counts closing ones too), so 8 sessions per machine take
// two connections of four.
const ConnsPerHost = 2

// BareFanOut runs tasks `true` sessions over servers with x/crypto/ssh
// alone: ConnsPerHost connections per machine dialed concurrently (dialing
// counts, as it does for the SDK's pool), perHost sessions in flight per
// machine, tasks spread round-robin. It returns the elapsed time, or the
// first dial or session error.
func BareFanOut(servers []*sshtest.OpenSSH, tasks, perHost int) (time.Duration, error) {
	return BareFanOutCommand(servers, tasks, perHost, func(int) string { return "true" })
}

// BareFanOutCommand is BareFanOut with exec string command(n) for task n
// (0 ≤ n < tasks) instead of `true`.
func BareFanOutCommand(servers []*sshtest.OpenSSH, tasks, perHost int, command func(n int) string) (time.Duration, error) {
	start := time.Now()
	clients := make([]*gossh.Client, len(servers)*ConnsPerHost)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, len(clients)+tasks)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := servers[i/ConnsPerHost]
			cb, err := knownhosts.New(s.KnownHostsPath)
			if err != nil {
				errs <- err
				return
			}
			c, err := gossh.Dial("tcp", s.Addr(), &gossh.ClientConfig{User: s.User, Auth: []gossh.AuthMethod{gossh.PublicKeys(s.ClientSigner)},
				HostKeyCallback: cb, Timeout: 10 * time.Second})
			if err != nil {
				errs <- fmt.Errorf("bare dial %s: %w", s.Addr(), err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return 0, <-errs
	}
	sems := make([]chan struct{}, len(clients))
	for i := range sems {
		sems[i] = make(chan struct{}, max(1, perHost/ConnsPerHost))
	}
	for n := range tasks {
		m := (n%len(servers))*ConnsPerHost + (n/len(servers))%ConnsPerHost
		sems[m] <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sems[m]; wg.Done() }()
			s, err := clients[m].NewSession()
			if err != nil {
				errs <- fmt.Errorf("bare session: %w", err)
				return
			}
			defer s.Close()
			if err := s.Run(command(n)); err != nil {
				errs <- fmt.Errorf("bare session: %w", err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		return 0, <-errs
	}
	return elapsed, nil
}

// SelfCPU returns this process's CPU time so far (user + system, all
// threads; children such as sshd processes are not included).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BusyJiffies returns the whole machine's non-idle CPU time from /proc/stat
// in clock ticks (10 ms): client, sshd and the commands together. It
// returns 0 where /proc/stat cannot be read.
func BusyJiffies() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	var total int64
	for i, f := range strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			total += n
		}
	}
	return total
}
