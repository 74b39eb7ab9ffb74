package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/tlsutil"
	"github.com/accelpool/accelpool/server"
	"github.com/accelpool/accelpool/store"
	etcdstore "github.com/accelpool/accelpool/store/etcd"
)

const serverHelp = `
Runs a control-plane replica: the registry of nodes, models and
applications in etcd, the leader-elected reconciler that places
applications on nodes, the admin API (/api/v1) and the gateway that routes
Open Inference Protocol requests for applications (/v2 on --listen, gRPC on
--grpc).

State lives in etcd: embedded (a single member in <data-dir>/etcd, its
client URL on --etcd-listen) unless --etcd-endpoints names a cluster.
Several replicas against one etcd elect a leader; the others serve reads
and forward writes. The admin API and agent joins need the token: --token,
$ACCELPOOL_TOKEN, or one generated at first start in <data-dir>/token.`

// openStore connects to etcd, starting an embedded member when no
// endpoints are given. The returned stop function closes both.
func openStore(ctx context.Context, endpoints, etcdListen, dataDir string, log *slog.Logger) (store.Store, func(), error) {
	return openStoreTTL(ctx, endpoints, etcdListen, dataDir, 3*time.Second, log)
}

// openStoreTTL is openStore with the leader-election session TTL: how long
// a dead leader holds leadership before a standby takes over.
func openStoreTTL(ctx context.Context, endpoints, etcdListen, dataDir string, electionTTL time.Duration, log *slog.Logger) (store.Store, func(), error) {
	var eps []string
	var emb *etcdstore.Embedded
	if endpoints == "" {
		var err error
		emb, err = etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{Dir: filepath.Join(dataDir, "etcd"),
			ClientURL: "http://" + etcdListen, PeerURL: "http://127.0.0.1:0", Logger: log})
		if err != nil {
			return nil, nil, err // it names the directory and the address
		}
		eps = emb.ClientEndpoints()
		log.Info("embedded etcd started", "endpoints", eps, "dir", filepath.Join(dataDir, "etcd"))
	} else {
		for _, e := range strings.Split(endpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				eps = append(eps, e)
			}
		}
	}
	st, err := etcdstore.New(etcdstore.Config{Endpoints: eps, Logger: log, ElectionTTL: electionTTL})
	if err != nil {
		if emb != nil {
			emb.Close()
		}
		return nil, nil, err
	}
	return st, func() {
		_ = st.Close()
		if emb != nil {
			emb.Close()
		}
	}, nil
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("server", "server [flags]", serverHelp, stderr)
	listen := fs.String("listen", "127.0.0.1:8000", "admin API + gateway REST `address`")
	grpcAddr := fs.String("grpc", "127.0.0.1:8001", "gateway gRPC `address` (empty: off)")
	dataDir := fs.String("data-dir", defaultDataDir(), "state `dir` (token, embedded etcd, upload spool)")
	endpoints := fs.String("etcd-endpoints", "", "external etcd `URLs`, comma-separated (default: embedded)")
	etcdListen := fs.String("etcd-listen", "127.0.0.1:2379", "embedded etcd client `address`")
	advertise := fs.String("advertise", "", "`URL` other replicas use to reach this one (default http://<listen>)")
	token := fs.String("token", os.Getenv("ACCELPOOL_TOKEN"), "cluster `token` (default $ACCELPOOL_TOKEN or <data-dir>/token)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `file`")
	tlsKey := fs.String("tls-key", "", "TLS key `file`")
	tlsCA := fs.String("tls-ca", "", "CA `file` (PEM) to trust for agents' and other replicas' TLS listeners")
	leaseTTL := fs.Duration("lease-ttl", 3*time.Second, "a node is down after this long without a heartbeat")
	electionTTL := fs.Duration("election-ttl", 3*time.Second, "a dead leader is replaced after this long")
	openInfer := fs.Bool("open-inference", false, "serve /v2 and gRPC inference without the token (loopback only)")
	logLevel := fs.String("log-level", "info", "log `level`")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if *endpoints == "" {
		if err := checkEtcdListen(*etcdListen); err != nil {
			return err
		}
	}
	if *openInfer && !auth.IsLoopback(*listen) {
		return errors.New("--open-inference is only allowed when --listen is a loopback address")
	}
	tok, generated, err := serverToken(*token, *dataDir)
	if err != nil {
		return err
	}
	if generated {
		fmt.Fprintf(stdout, "generated a cluster token in %s (agents and the CLI need it: ACCELPOOL_TOKEN)\n", tokenFile(*dataDir))
	}
	st, closeStore, err := openStoreTTL(ctx, *endpoints, *etcdListen, *dataDir, *electionTTL, log)
	if err != nil {
		return err
	}
	defer closeStore()
	tcfg, err := tlsutil.ClientConfig(*tlsCA)
	if err != nil {
		return err
	}
	r, err := server.Start(ctx, server.ServeConfig{
		Config: server.Config{Store: st, AdvertiseURL: *advertise, Token: tok, DataDir: *dataDir, Logger: log, LeaseTTL: *leaseTTL,
			ForwardClient: tlsutil.HTTPClient(tcfg, 5*time.Minute)},
		ListenAddr: *listen, GRPCAddr: *grpcAddr, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, OpenInference: *openInfer,
		GatewayDialOptions: tlsutil.DialOptions(tcfg), Version: Version,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "accelpool server %s: admin API and gateway on %s, gateway gRPC on %s\n", Version, r.URL(), r.GRPCAddr())
	select {
	case <-ctx.Done():
	case err = <-r.Err():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = r.Close(sctx)
	return err
}

// checkEtcdListen refuses an embedded etcd client address beyond
// loopback: the embedded etcd has no authentication, and whoever reaches
// it can read and write the whole cluster's state. A cluster of machines
// uses an external etcd with its own TLS and auth (--etcd-endpoints).
func checkEtcdListen(addr string) error {
	if !auth.IsLoopback(addr) {
		return fmt.Errorf("--etcd-listen %s binds beyond loopback, but the embedded etcd has no authentication: keep it on 127.0.0.1, or run an etcd with TLS and auth and give --etcd-endpoints", addr)
	}
	return nil
}
