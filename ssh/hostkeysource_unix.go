//go:build unix

package ssh

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// knownHostsFromTexts builds the knownhosts callback from files and texts.
// x/crypto's knownhosts reads only named files; each text is handed to it
// as the read end of a pipe (/dev/fd/N) that a goroutine fills, so no
// temporary file is written.
func knownHostsFromTexts(files []string, texts []knownHostsText) (xssh.HostKeyCallback, map[string]string, error) {
	paths := append([]string(nil), files...)
	names := map[string]string{}
	var readers []*os.File
	var wg sync.WaitGroup
	defer func() {
		for _, r := range readers {
			r.Close() // a writer still blocked gets EPIPE
		}
		wg.Wait()
	}()
	for _, t := range texts {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("known hosts of %s: %w", t.name, err)
		}
		readers = append(readers, r)
		p := fmt.Sprintf("/dev/fd/%d", r.Fd())
		names[p] = t.name
		paths = append(paths, p)
		wg.Add(1)
		go func(w *os.File, b []byte) {
			defer wg.Done()
			_, _ = w.Write(b)
			w.Close()
		}(w, t.content)
	}
	cb, err := knownhosts.New(paths...)
	if err != nil {
		// knownhosts names the file of a line it cannot parse: say which
		// text it was.
		msg := err.Error()
		for p, n := range names {
			msg = strings.ReplaceAll(msg, p, n)
		}
		return nil, nil, errors.New(msg)
	}
	return cb, names, nil
}
