/**
 * The core conformance suite from source: scheduler and workers under Deno, and mixed
 * (scheduler on Deno, workers on Bun).
 */
import { coreSuite } from "./_core-suite.ts";

coreSuite("deno", { flavor: "deno", workerFlavor: "deno" });
coreSuite("mixed: scheduler on deno, workers on bun", { flavor: "deno", workerFlavor: "bun" });
