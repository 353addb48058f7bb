package rediacc

// DefaultTeam is the team every new store has, and the team of a machine
// added without one.
const DefaultTeam = "default"
