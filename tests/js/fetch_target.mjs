// A second TUF client for otactl's interop tests: tuf-js refreshes, finds one target, downloads it.
//
//   node fetch_target.mjs '<json>'      (or the JSON on stdin)
//
// The JSON: {"root": trusted root file, "metadataBaseUrl", "targetBaseUrl", "cacheDir", "target",
//            "output": where the target's bytes go, "rootBaseUrl": optional}.
// The cache dir is the device's trusted state (<cacheDir>/metadata/, seeded with the root on first
// use, then kept, as a device keeps it); call again with the same dir to update from it.
//
// With rootBaseUrl, a fetcher of our own (a BaseFetcher subclass) sends every request for
// <metadataBaseUrl><N>.root.json to <rootBaseUrl><N>.root.json: many per-device repositories share one
// root chain, served from one place. Everything else goes where tuf-js asks.
//
// Prints one line of JSON: {"ok": true, "sha256", "length", "custom", "rootRequests"} or, on any
// error, {"ok": false, "error"} and exits 1 (2: the arguments were wrong).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { BaseFetcher, Updater } from 'tuf-js';
// tuf-js exports BaseFetcher but not its HTTP fetcher: a custom fetcher must throw tuf-js's own
// DownloadHTTPError on a 404, or the client cannot tell "no newer root" from a failure, so the
// rewriting fetcher delegates to the default one (the file is in the pinned package, no "exports" map).
import { DefaultFetcher } from 'tuf-js/dist/fetcher.js';

const FETCH_TIMEOUT_MS = 30000;

class UsageError extends Error {}

function withSlash(url) {
  return url.endsWith('/') ? url : `${url}/`;
}

class RootRewritingFetcher extends BaseFetcher {
  constructor(metadataBaseUrl, rootBaseUrl) {
    super();
    this.metadataBaseUrl = withSlash(metadataBaseUrl);
    this.rootBaseUrl = withSlash(rootBaseUrl);
    this.inner = new DefaultFetcher({ timeout: FETCH_TIMEOUT_MS });
    this.rootRequests = [];
  }

  rewrite(url) {
    if (!url.startsWith(this.metadataBaseUrl)) return url;
    const name = url.slice(this.metadataBaseUrl.length);
    if (!/^[0-9]+\.root\.json$/.test(name)) return url;
    const moved = this.rootBaseUrl + name;
    this.rootRequests.push(moved);
    return moved;
  }

  async fetch(url) {
    return this.inner.fetch(this.rewrite(url));
  }
}

async function readArgs() {
  let text = process.argv[2];
  if (text === undefined) {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    text = Buffer.concat(chunks).toString('utf8');
  }
  let args;
  try {
    args = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`arguments are not JSON: ${error.message}`);
  }
  for (const name of ['root', 'metadataBaseUrl', 'targetBaseUrl', 'cacheDir', 'target', 'output']) {
    if (typeof args[name] !== 'string' || args[name] === '') {
      throw new UsageError(`argument ${name} is missing (a non-empty string)`);
    }
  }
  if (args.rootBaseUrl !== undefined && typeof args.rootBaseUrl !== 'string') {
    throw new UsageError('argument rootBaseUrl must be a string');
  }
  return args;
}

async function fetchTarget(args) {
  const metadataDir = path.join(args.cacheDir, 'metadata');
  const targetDir = path.join(args.cacheDir, 'targets');
  fs.mkdirSync(metadataDir, { recursive: true });
  fs.mkdirSync(targetDir, { recursive: true });
  const trusted = path.join(metadataDir, 'root.json');
  if (!fs.existsSync(trusted)) fs.copyFileSync(args.root, trusted);

  const fetcher = args.rootBaseUrl
    ? new RootRewritingFetcher(args.metadataBaseUrl, args.rootBaseUrl)
    : undefined;
  const updater = new Updater({
    metadataDir,
    metadataBaseUrl: args.metadataBaseUrl,
    targetDir,
    targetBaseUrl: args.targetBaseUrl,
    fetcher,
    config: { fetchTimeout: FETCH_TIMEOUT_MS },
  });
  await updater.refresh();
  const info = await updater.getTargetInfo(args.target);
  if (!info) throw new Error(`target ${args.target} not found in the trusted metadata`);
  fs.mkdirSync(path.dirname(args.output), { recursive: true });
  await updater.downloadTarget(info, args.output);
  const data = fs.readFileSync(args.output);
  return {
    ok: true,
    sha256: createHash('sha256').update(data).digest('hex'),
    length: data.length,
    custom: info.custom ?? null,
    rootRequests: fetcher ? fetcher.rootRequests : [],
  };
}

async function main() {
  let args;
  try {
    args = await readArgs();
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: `usage: ${error.message}` }));
    return 2;
  }
  try {
    console.log(JSON.stringify(await fetchTarget(args)));
    return 0;
  } catch (error) {
    const name = error?.constructor?.name ?? 'Error';
    const status = error?.statusCode === undefined ? '' : ` (HTTP ${error.statusCode})`;
    console.log(JSON.stringify({ ok: false, error: `${name}: ${error?.message ?? error}${status}` }));
    return 1;
  }
}

process.exitCode = await main();
