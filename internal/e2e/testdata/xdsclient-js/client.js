// A proxyless gRPC client in JavaScript (@grpc/grpc-js with
// @grpc/grpc-js-xds), used by internal/e2e/xdsclient_test.go to show that a
// client gmesh did not start, in another language, follows the mesh's
// routing.
//
// It dials TARGET (an xds:/// URI) with the bootstrap named by
// GRPC_XDS_BOOTSTRAP (or given in GRPC_XDS_BOOTSTRAP_CONFIG), calls
// proto.echo.EchoService/Echo, and counts the replies by the version they
// name ("... Version 1.0)"). Every --report-ms it prints one JSON line:
//
//   {"calls":N,"ok":N,"failed":N,"versions":{"0.9":N,...},"errors":{"14 UNAVAILABLE: ...":N},"done":false}
//
// and a last line with "done":true when it stops: after --calls calls, after
// --max-seconds, or when its standard input closes (the test's way to stop
// it), whichever comes first. It exits 0 however the calls went; the
// counts say.
//
// Usage: node client.js --proto PATH [--target xds:///echo-server.echo.local]
//        [--calls N] [--max-seconds S] [--concurrency C] [--rps R]
//        [--deadline-ms D] [--report-ms MS]
'use strict';

const grpc = require('@grpc/grpc-js');
const grpcXds = require('@grpc/grpc-js-xds');
const protoLoader = require('@grpc/proto-loader');

function parseArgs(argv) {
  const opts = {
    proto: '',
    target: 'xds:///echo-server.echo.local',
    calls: 0, // 0: no limit but --max-seconds and stdin
    maxSeconds: 120,
    concurrency: 4,
    rps: 0, // 0: as fast as the concurrency allows
    deadlineMs: 5000,
    reportMs: 200,
    name: 'js',
  };
  const numeric = { calls: 1, maxSeconds: 1, concurrency: 1, rps: 1, deadlineMs: 1, reportMs: 1 };
  for (let i = 2; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!flag.startsWith('--') || value === undefined) {
      throw new Error(`bad argument ${flag}: want --flag value`);
    }
    const key = flag.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in opts)) {
      throw new Error(`unknown flag ${flag}`);
    }
    if (key in numeric) {
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) {
        throw new Error(`${flag} ${value}: want a number >= 0`);
      }
      opts[key] = n;
    } else {
      opts[key] = value;
    }
  }
  if (!opts.proto) {
    throw new Error('--proto PATH to echo.proto is required');
  }
  if (opts.concurrency < 1) {
    throw new Error('--concurrency must be at least 1');
  }
  return opts;
}

const versionRe = /Version ([^)\s]+)\)/;

function main() {
  const opts = parseArgs(process.argv);
  grpcXds.register();
  const def = protoLoader.loadSync(opts.proto, { keepCase: true });
  const echo = grpc.loadPackageDefinition(def).proto.echo;
  const client = new echo.EchoService(opts.target, grpc.credentials.createInsecure());

  const stats = { calls: 0, ok: 0, failed: 0, versions: {}, errors: {} };
  let stopping = false;
  const started = Date.now();
  const report = (done) => {
    process.stdout.write(JSON.stringify({ ...stats, done }) + '\n');
  };
  const stop = () => {
    stopping = true;
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  const maxTimer = setTimeout(stop, opts.maxSeconds * 1000);
  const reportTimer = setInterval(() => report(false), opts.reportMs);

  // The rate limit, shared by the workers: call k may start at
  // started + k/rps.
  let issued = 0;
  const delayFor = () => {
    if (opts.rps <= 0) {
      return 0;
    }
    const due = started + (issued * 1000) / opts.rps;
    return Math.max(0, due - Date.now());
  };
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const callOnce = () =>
    new Promise((resolve) => {
      const deadline = new Date(Date.now() + opts.deadlineMs);
      client.Echo({ name: opts.name }, { deadline }, (err, reply) => {
        stats.calls++;
        if (err) {
          stats.failed++;
          const key = `${err.code} ${grpc.status[err.code] || ''}: ${err.details || err.message}`;
          stats.errors[key] = (stats.errors[key] || 0) + 1;
        } else {
          const m = versionRe.exec(reply.message);
          const v = m ? m[1] : 'unknown';
          stats.ok++;
          stats.versions[v] = (stats.versions[v] || 0) + 1;
        }
        resolve();
      });
    });
  const worker = async () => {
    while (!stopping && (opts.calls === 0 || issued < opts.calls)) {
      const d = delayFor();
      issued++;
      if (d > 0) {
        await wait(d);
      }
      if (stopping) {
        issued--;
        break;
      }
      await callOnce();
    }
  };
  const workers = [];
  for (let i = 0; i < opts.concurrency; i++) {
    workers.push(worker());
  }
  Promise.all(workers).then(() => {
    clearTimeout(maxTimer);
    clearInterval(reportTimer);
    report(true);
    client.close();
    process.stdin.pause();
    // The xDS client's ADS stream keeps the event loop alive; every call
    // has ended, so leave now.
    process.exit(0);
  });
}

try {
  main();
} catch (e) {
  process.stderr.write(`xdsclient-js: ${e.message}\n`);
  process.exit(2);
}
