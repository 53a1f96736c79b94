// Bundles src/harness.js (matrix-js-sdk and its Rust crypto bindings, livekit-client for MatrixRTC) into dist/ with
// esbuild, with the page, the crypto WASM and livekit-client's E2EE worker (dist/livekit-e2ee-worker.js, a classic
// worker script that src/rtc.js starts for each LiveKit room of an encrypted call) beside it. The bundle is an ES
// module: the crypto bindings find their WASM through import.meta.url, at dist/pkg/matrix_sdk_crypto_wasm_bg.wasm,
// which the test server serves as application/wasm.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "pkg"), { recursive: true });

await build({
    entryPoints: [join(here, "src", "harness.js")],
    outfile: join(dist, "harness.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "chrome120",
    sourcemap: true,
    logLevel: "warning",
    define: { "process.env.NODE_ENV": '"production"' },
});

// livekit-client's frame encryptor/decryptor, which runs in a Worker: a bundle of its own
await build({
    entryPoints: ["livekit-client/e2ee-worker"],
    outfile: join(dist, "livekit-e2ee-worker.js"),
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "chrome120",
    sourcemap: true,
    logLevel: "warning",
    absWorkingDir: here,
    define: { "process.env.NODE_ENV": '"production"' },
});

const cryptoPackage = join(here, "node_modules", "@matrix-org", "matrix-sdk-crypto-wasm");
copyFileSync(join(cryptoPackage, "pkg", "matrix_sdk_crypto_wasm_bg.wasm"), join(dist, "pkg", "matrix_sdk_crypto_wasm_bg.wasm"));
copyFileSync(join(here, "src", "index.html"), join(dist, "index.html"));
console.log(`interop: built ${join("dist", "harness.js")}, ${join("dist", "livekit-e2ee-worker.js")}`);
