package cli

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// tokenFile is where a control plane keeps its generated token.
func tokenFile(dataDir string) string { return filepath.Join(dataDir, "token") }

// serverToken returns the flag's token, else the one in <dataDir>/token,
// else a new random one written there (0600).
func serverToken(flagValue, dataDir string) (string, bool, error) {
	if flagValue != "" {
		return flagValue, false, nil
	}
	if b, err := os.ReadFile(tokenFile(dataDir)); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("read token: %w", err)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	t := hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, err
	}
	if err := os.WriteFile(tokenFile(dataDir), []byte(t+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write token: %w", err)
	}
	return t, true, nil
}

// clientToken is --token, else $ACCELPOOL_TOKEN, else the local data
// directory's token file (so commands on the machine running `up` or
// `server` work without configuration).
func clientToken(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if t := os.Getenv("ACCELPOOL_TOKEN"); t != "" {
		return t
	}
	if b, err := os.ReadFile(tokenFile(defaultDataDir())); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}
