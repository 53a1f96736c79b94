// The test process's hands in Chromium: reads one JSON request per line on stdin, answers one JSON line on stdout.
//
//   {"id": 1, "op": "launch", "executable": "/usr/bin/chromium", "profile": "<empty dir>", "log": "<file>"}
//   {"id": 2, "op": "open", "page": "owner", "url": "http://127.0.0.1:<port>/index.html"}
//   {"id": 3, "op": "call", "page": "owner", "method": "start", "args": [{...}]}   -> window.H[method](...args)
//   {"id": 4, "op": "close"}
//
// Answers are {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": "..."}. Requests run
// concurrently (a slow call does not hold up a status poll). Browser console output and page errors go to the log
// file, one line each, prefixed with the page name. The browser is closed on "close", on end of input and on
// SIGTERM, so a test process that dies leaves no Chromium behind.
import { appendFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

// Flags that keep Chromium off the network (no background requests, no component or field-trial downloads, no
// sync, no QUIC) with fake camera and microphone that need no permission prompt. Loopback candidates are allowed
// for WebRTC: the tests keep media on 127.0.0.1. No --disable-features here: Chromium takes only the last one, and
// playwright passes its own (which also switches off network time queries and preconnects).
export const CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--no-pings",
    "--metrics-recording-only",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
];

let context = null;
const pages = new Map();
let logFile = null;

function logLine(text) {
    if (logFile) {
        try {
            appendFileSync(logFile, `${new Date().toISOString()} ${text}\n`);
        } catch {
            // the log is a help, never a reason to fail
        }
    }
}

function reply(message) {
    process.stdout.write(JSON.stringify(message) + "\n");
}

async function launch({ executable, profile, log, microphone }) {
    if (context) throw new Error("already launched");
    logFile = log ?? null;
    context = await chromium.launchPersistentContext(profile, {
        executablePath: executable,
        headless: true,
        args: microphone ? [...CHROMIUM_FLAGS, `--use-file-for-fake-audio-capture=${microphone}`] : CHROMIUM_FLAGS,
        // playwright's own defaults are kept (they add more of the same kind); these two are ours alone
        ignoreDefaultArgs: ["--mute-audio"],
        permissions: ["camera", "microphone"],
        timeout: 60000,
    });
    const browser = context.browser();
    return { version: browser ? browser.version() : null };
}

async function open({ page: name, url }) {
    if (!context) throw new Error("launch first");
    if (pages.has(name)) throw new Error(`page ${name} is already open`);
    const page = await context.newPage();
    pages.set(name, page);
    page.on("console", (msg) => logLine(`[${name}] ${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => logLine(`[${name}] pageerror: ${err.stack ?? err}`));
    page.on("crash", () => logLine(`[${name}] page crashed`));
    await page.goto(url);
    await page.waitForFunction(() => window.harnessReady === true, null, { timeout: 30000 });
    return true;
}

async function call({ page: name, method, args = [] }) {
    const page = pages.get(name);
    if (!page) throw new Error(`no page ${name}`);
    return page.evaluate(([m, a]) => {
        if (typeof window.H[m] !== "function") throw new Error(`the harness has no method ${m}`);
        return window.H[m](...a);
    }, [method, args]);
}

async function close() {
    const ctx = context;
    context = null;
    pages.clear();
    if (ctx) await ctx.close();
    return true;
}

const ops = { launch, open, call, close };

async function handle(line) {
    let request;
    try {
        request = JSON.parse(line);
    } catch (err) {
        reply({ id: null, ok: false, error: `bad request line: ${err.message}` });
        return;
    }
    const op = ops[request.op];
    try {
        if (!op) throw new Error(`unknown op ${request.op}`);
        const result = await op(request);
        reply({ id: request.id, ok: true, result: result ?? null });
    } catch (err) {
        logLine(`[driver] ${request.op} ${request.method ?? ""} failed: ${err.stack ?? err}`);
        reply({ id: request.id, ok: false, error: String(err.message ?? err) });
    }
    if (request.op === "close") process.exit(0);
}

async function shutdown(code) {
    try {
        await close();
    } finally {
        process.exit(code);
    }
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
const input = createInterface({ input: process.stdin });
input.on("line", (line) => {
    if (line.trim()) handle(line);
});
input.on("close", () => shutdown(0));
