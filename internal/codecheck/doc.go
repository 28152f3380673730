// Package codecheck holds no code: its tests read banger's own source and
// enforce rules that review alone kept missing (every test skip through
// internal/testutil; no return statement that reads a variable a call in
// the same statement fills).
package codecheck
