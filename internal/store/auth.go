package store

import "errors"

// ErrUnauthenticated: the database refused the store's login (wrong
// password, unknown role, no pg_hba.conf entry: SQLSTATE class 28).
var ErrUnauthenticated = errors.New("store: the database refused the login")
