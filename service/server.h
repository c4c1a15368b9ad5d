/* The HTTP listener: libmicrohttpd with an epoll thread pool, request body
 * limits, request ids, and the hand-off to api_dispatch. */
#ifndef SERVER_H
#define SERVER_H

#include <stdint.h>

#include "km.h"

struct server;
struct cfg;
struct api_ctx;

/* Listens on cfg->listen; *port receives the bound port (useful with :0). */
int server_start(const struct cfg *c, struct api_ctx *ctx,
    struct server **out, uint16_t *port) KM_WUR;
/* Stops accepting, lets running handlers finish, closes. NULL is a no-op. */
void server_stop(struct server *s);

#endif
