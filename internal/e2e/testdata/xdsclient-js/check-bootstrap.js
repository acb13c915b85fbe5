// Loads the xDS bootstrap from GRPC_XDS_BOOTSTRAP or
// GRPC_XDS_BOOTSTRAP_CONFIG exactly as @grpc/grpc-js-xds does when its first
// xds:/// channel starts, and says whether it accepts it: exit 0 and "ok",
// or exit 1 and its error. (The module path is internal to grpc-js-xds; the
// version is pinned by package-lock.json.)
'use strict';

const { loadBootstrapInfo } = require('@grpc/grpc-js-xds/build/src/xds-bootstrap');

try {
  const info = loadBootstrapInfo();
  process.stdout.write(`ok: node ${info.node.id}, server ${info.xdsServers[0].server_uri}\n`);
} catch (e) {
  process.stdout.write(`refused: ${e.message}\n`);
  process.exit(1);
}
