/**
 * The dashboard's login link, as `cluster dashboard [URL]` prints it.
 *
 * @module
 */

/**
 * The URL that opens the dashboard of the scheduler at `url` and logs the browser in with
 * `token` (the page then drops the token from its address). Without a token, the bare URL.
 *
 * @example
 * ```ts
 * dashboardLink("http://127.0.0.1:8786", "s3cret"); // "http://127.0.0.1:8786/?token=s3cret"
 * dashboardLink("http://127.0.0.1:8786/api/v1/", undefined); // "http://127.0.0.1:8786/"
 * ```
 */
export function dashboardLink(url: string, token: string | undefined): string {
  const link = new URL("/", url);
  link.protocol = link.protocol === "wss:" ? "https:" : link.protocol === "ws:" ? "http:" : link.protocol;
  if (link.protocol !== "http:" && link.protocol !== "https:") {
    throw new TypeError(`Cannot make a dashboard link: "${url}" is not an http(s) URL`);
  }
  link.search = "";
  link.hash = "";
  if (token) link.searchParams.set("token", token);
  return link.href;
}
