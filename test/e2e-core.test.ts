/**
 * The core conformance suite against the compiled binary.
 */
import { coreSuite } from "./_core-suite.ts";

coreSuite("binary", { flavor: "binary", workerFlavor: "binary" });
