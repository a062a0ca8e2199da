/**
 * `cluster dashboard [URL]`: prints the dashboard's login link, `URL/?token=TOKEN`, with the
 * admin token from `--token-file`, `CLUSTER_TOKEN`, or the token file a scheduler on this host
 * keeps in its state directory (`--state-dir`, else the default one). This is the one place the
 * cluster prints a token, on purpose: the link is for the person who asked, on their own
 * terminal. Opening it once sets the dashboard's cookie and drops the token from the browser's
 * address bar.
 *
 * @module
 */
import { defineCommand } from "citty";
import { defaultTokenPath, readTokenFile } from "../lib/auth/token-file.ts";
import { dashboardLink } from "../lib/dashboard/link.ts";
import { applyTokenFile, checkFlags, commonArgs, schedulerUrl } from "./_args.ts";

const dashboardArgs = {
  scheduler: { type: "positional", description: "Scheduler URL (default http://127.0.0.1:8786)", required: false },
  "state-dir": { type: "string", description: "The scheduler's state directory, to read its token file from (default $XDG_STATE_HOME/cluster or ~/.local/state/cluster)" },
  ...commonArgs,
} as const;

/** The `dashboard` subcommand. */
export const dashboardCommand = defineCommand({
  meta: { name: "dashboard", description: "Print the dashboard's login link (it contains the token)" },
  args: dashboardArgs,
  run({ args: a, rawArgs }) {
    checkFlags(rawArgs, dashboardArgs);
    const stateDir = typeof a["state-dir"] === "string" && a["state-dir"] !== "" ? a["state-dir"] : undefined;
    if (stateDir !== undefined && !a["token-file"]) {
      // readTokenFile's ConfigError names the file (exit 2).
      process.env.CLUSTER_TOKEN = readTokenFile(defaultTokenPath(stateDir));
    } else {
      applyTokenFile(a["token-file"]);
    }
    const url = schedulerUrl(a.scheduler ?? "http://127.0.0.1:8786");
    const token = process.env.CLUSTER_TOKEN?.trim() || undefined;
    if (!token) process.stderr.write("cluster: no token found (--token-file, CLUSTER_TOKEN or the state directory): printing the bare URL\n");
    console.log(dashboardLink(url, token));
  },
});
