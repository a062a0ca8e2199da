/**
 * `cluster dashboard [URL]`: prints the dashboard's login link, `URL/?token=TOKEN`, with the
 * admin token from `--token-file` or `CLUSTER_TOKEN`. This is the one place the cluster prints
 * a token, on purpose: the link is for the person who asked, on their own terminal. Opening it
 * once sets the dashboard's cookie and drops the token from the browser's address bar.
 *
 * @module
 */
import { defineCommand } from "citty";
import { dashboardLink } from "../lib/dashboard/link.ts";
import { applyTokenFile, checkFlags, commonArgs, schedulerUrl } from "./_args.ts";

const dashboardArgs = {
  scheduler: { type: "positional", description: "Scheduler URL (default http://127.0.0.1:8786)", required: false },
  ...commonArgs,
} as const;

/** The `dashboard` subcommand. */
export const dashboardCommand = defineCommand({
  meta: { name: "dashboard", description: "Print the dashboard's login link (it contains the token)" },
  args: dashboardArgs,
  run({ args: a, rawArgs }) {
    checkFlags(rawArgs, dashboardArgs);
    applyTokenFile(a["token-file"]);
    const url = schedulerUrl(a.scheduler ?? "http://127.0.0.1:8786");
    // Once the scheduler keeps a default token file in its state directory, read that too
    // (lib/auth/token-file.ts's findToken): the link should work with no flag on the same host.
    const token = process.env.CLUSTER_TOKEN?.trim() || undefined;
    if (!token) process.stderr.write("cluster: no token (CLUSTER_TOKEN or --token-file): printing the bare URL\n");
    console.log(dashboardLink(url, token));
  },
});
