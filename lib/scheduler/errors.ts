/**
 * The errors the scheduler's operations throw, and the one place that maps them to an HTTP
 * status (the HTTP routes and the client socket both answer with it).
 *
 * @module
 */
import { PluginError } from "../errors.ts";
import { RequestError } from "../rpc.ts";
import { GraphError } from "./graph.ts";
import { inputErrorStatus } from "../limits.ts";

/** Something named does not exist (a key, a plugin): 404. */
export class NotFoundError extends Error {
  override name = "NotFoundError";
  readonly code = "E_NOT_FOUND";
}

/** A request clashes with what the scheduler holds (a key with another definition): 409. */
export class ConflictError extends Error {
  override name = "ConflictError";
  readonly code = "E_CONFLICT";
  /** The key in conflict, where there is one. */
  readonly key: string | undefined;
  constructor(message: string, options: { key?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.key = options.key;
  }
}

/** The caller may not do this: 403. */
export class ForbiddenError extends Error {
  override name = "ForbiddenError";
  readonly code = "E_FORBIDDEN";
}

/** A malformed request that is not a graph (a bad query, an unknown op): 400. */
export class BadRequestError extends Error {
  override name = "BadRequestError";
  readonly code = "E_BAD_REQUEST";
}

/** A task that has not finished within the wait asked for: 408, with its `key` and `state`. */
export class NotReadyError extends Error {
  override name = "NotReadyError";
  readonly code = "E_NOT_READY";
  readonly detail: Record<string, unknown>;
  constructor(message: string, detail: Record<string, unknown>) {
    super(message);
    this.detail = detail;
  }
}

/** The result asked for is an error: 409, with the task's `key` and `traceback`. */
export class TaskFailedError extends Error {
  override name = "TaskFailedError";
  readonly code = "E_TASK_FAILED";
  readonly detail: Record<string, unknown>;
  constructor(message: string, detail: Record<string, unknown>) {
    super(message);
    this.detail = detail;
  }
}

/** The JSON body of an error answer: `{error, ...detail}`. */
export function errorBody(err: unknown): Record<string, unknown> {
  const detail = err instanceof NotReadyError || err instanceof TaskFailedError ? err.detail : undefined;
  return { ...detail, error: err instanceof Error ? err.message : String(err) };
}

/** The HTTP status for an error thrown by an operation; 500 for anything unexpected. */
export function httpStatus(err: unknown): 400 | 403 | 404 | 408 | 409 | 413 | 422 | 500 | 504 {
  const input = inputErrorStatus(err);
  if (input !== null) return input;
  if (err instanceof GraphError || err instanceof BadRequestError) return 400;
  if (err instanceof ForbiddenError) return 403;
  if (err instanceof NotFoundError) return 404;
  if (err instanceof NotReadyError) return 408;
  if (err instanceof ConflictError || err instanceof TaskFailedError) return 409;
  if (err instanceof PluginError) return 422;
  if (err instanceof RequestError && err.code === "E_TIMEOUT") return 504;
  return 500;
}
