/**
 * Errors that callers catch, each with a stable `code` (as citty's `CLIError`).
 *
 * @module
 */

/** A bad plugins.toml, flag or option: the process exits with code 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly code: string;
  constructor(message: string, options?: { code?: string; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.code = options?.code ?? "E_CONFIG";
  }
}

/** A plugin hook failed where the failure must reach the caller (start/setup at registration). */
export class PluginError extends Error {
  override name = "PluginError";
  readonly code: string;
  readonly plugin: string;
  constructor(plugin: string, message: string, options?: { code?: string; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.plugin = plugin;
    this.code = options?.code ?? "E_PLUGIN";
  }
}

/** Returns the message of anything thrown. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
