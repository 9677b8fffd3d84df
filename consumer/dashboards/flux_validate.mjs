// Check Flux scripts with InfluxData's own parser and semantic checker (flux-lsp-browser, WebAssembly).
//
// Usage: node validate.mjs PACKAGE_DIR < scripts.json > results.json
//   scripts.json: a JSON list of Flux scripts; results.json: a JSON list of
//   {"valid": bool, "semantic": bool|null, "error": str|null}, one per script.
//
// The package is built for bundlers (its _bg.js imports the .wasm as an ES module), which plain
// node cannot load. So the _bg.js glue is loaded from a data: URL with that import replaced by a
// setter, and the .wasm is instantiated here with the functions the glue exports as its imports.
import { readFileSync } from "node:fs";
import { join } from "node:path";

const NAME = "flux-lsp-browser";

async function loadParser(packageDir) {
  const glue = readFileSync(join(packageDir, `${NAME}_bg.js`), "utf8")
    .replace(/^import \* as wasm from .*$/m, "let wasm;")
    .replace(/^cached\w+Memory0 = new \w+\(wasm\.memory\.buffer\);$/gm, "");
  const setter = `
export function __attach(instance) {
  wasm = instance;
  cachedInt32Memory0 = new Int32Array(wasm.memory.buffer);
  cachedUint8Memory0 = new Uint8Array(wasm.memory.buffer);
}`;
  const url = "data:text/javascript;base64," + Buffer.from(glue + setter).toString("base64");
  const lib = await import(url);
  const bytes = readFileSync(join(packageDir, `${NAME}_bg.wasm`));
  const { instance } = await WebAssembly.instantiate(bytes, { [`./${NAME}_bg.js`]: lib });
  lib.__attach(instance.exports);
  return lib;
}

function check(lib, script) {
  let valid = false;
  let semantic = null;
  let error = null;
  try {
    valid = lib.is_valid_flux(script);
  } catch (e) {
    error = String(e && e.message ? e.message : e);
  }
  if (valid) {
    const flux = new lib.Flux(script);
    try {
      semantic = flux.is_valid();
    } catch (e) {
      semantic = false;
      error = String(e && e.message ? e.message : e);
    } finally {
      flux.free();
    }
  }
  return { valid, semantic, error };
}

const lib = await loadParser(process.argv[2]);
const scripts = JSON.parse(readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(scripts.map((s) => check(lib, s))));
