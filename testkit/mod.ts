/**
 * The test kit shared by `test/` and `bench/`: processes of the real binary or the sources
 * (`cluster.ts`), graph builders (`graphs.ts`), one `waitFor` (`wait.ts`), loopback ports
 * (`net.ts`), separate hosts in network namespaces (`netns.ts`), HTTP and event-stream helpers
 * (`http.ts`), a private RabbitMQ broker (`rabbitmq.ts`) and a delaying TCP proxy (`proxy.ts`). `tasks.ts` is not code to import but a
 * task module for workers (`--tasks`).
 *
 * @module
 */
export * from "./cluster.ts";
export * from "./graphs.ts";
export * from "./http.ts";
export * from "./net.ts";
export * from "./netns.ts";
export * from "./proxy.ts";
export * from "./rabbitmq.ts";
export * from "./wait.ts";
