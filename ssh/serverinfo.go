package ssh

import "context"

// ServerVersion returns the identification string t's SSH server sent
// ("SSH-2.0-OpenSSH_9.2p1 Debian-2"; see OpenSSHVersion), over a pooled
// connection to t, dialing one when there is none (with Run's checks and
// errors).
func (p *Pool) ServerVersion(ctx context.Context, t Target) (string, error) {
	if err := validateTarget(&t); err != nil {
		return "", err
	}
	if !p.enter() {
		return "", targetErr(&t, ErrPoolClosed, nil, "pool closed")
	}
	defer p.wg.Done()
	hp := p.hostPool(&t)
	c, err := p.acquire(ctx, &t, hp, acquireNormal)
	if err != nil {
		return "", err
	}
	defer p.release(c)
	return string(c.client.ServerVersion()), nil
}
