package main

import (
	"errors"

	"github.com/rediacc/rediacc"
)

// advised is an SDK error whose message was rewritten in the CLI's terms
// (flags instead of Config fields); errors.Is/As still see the SDK error.
type advised struct {
	msg string
	err error
}

func (a advised) Error() string { return a.msg }
func (a advised) Unwrap() error { return a.err }

// advise rewrites the advice of the SDK's typed errors that name Config
// fields, for a CLI user.
func advise(err error) error {
	var am *rediacc.ArchiveMismatchError
	if errors.As(err, &am) {
		return advised{msg: am.Explain("use another --data-dir (env REDIACC_HOME)"), err: err}
	}
	return err
}
