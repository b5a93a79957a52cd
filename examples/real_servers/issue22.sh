#!/bin/sh
# The issue-22 benchmark set: real_servers with the defaults (Customer.io Client and README
# stack), 10 tasks, R = 100/s; fleets of four OS processes on one Redis quota.
# Usage: examples/real_servers/issue22.sh <path to real_servers binary> [others]
# ("others": only the servers that tolerate timing noise, and the GitHub-style ones).
set -eu
bin=$1
run() { echo "### real_servers $*"; "$bin" --only defaults "$@" | grep -E '^\| [^s-]|^- |SKIPPED'; }
if [ "${2:-}" != others ]; then
  run --server nginx0 --seconds 30 --tasks 10,50
  run --server nginx0 --seconds 30 --tasks 10 --jitter
  run --server nginx0 --seconds 30 --tasks 10 --fleet 4 --processes
fi
for server in github github-ms; do run --server $server --seconds 10 --tasks 10; done
for server in nginx5 nginx99 haproxy fixed; do
  run --server $server --seconds 10 --tasks 10
  run --server $server --seconds 10 --tasks 10 --jitter
  run --server $server --seconds 10 --tasks 10 --fleet 4 --processes
done
