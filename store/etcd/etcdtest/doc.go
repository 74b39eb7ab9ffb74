// Package etcdtest starts etcd for tests in any package: StartEmbedded runs
// one in-process (store/etcd.StartEmbedded on free loopback ports),
// StartProcess runs Debian's etcd-server binary (/usr/bin/etcd, etcd 3.4) as
// a separate process that a test can stop and restart on the same data
// directory and ports. Both clean up with the test. A missing binary fails
// the test loudly with the command that installs it; nothing here skips.
package etcdtest
