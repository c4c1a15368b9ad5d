/* The HTTP ceiling for tests/bench/run: a libmicrohttpd server that does
 * nothing but read a request's body and answer a small JSON object, with
 * kmsd's threading mode (an internal thread pool, epoll, one thread per
 * core as kmsd's http_threads = 0) and connection settings. What the load
 * generator gets from it is the most any handler could get on this
 * machine. Not a test.
 *
 *   http_ceiling [THREADS]      (default: the number of online cores)
 *
 * Listens on 127.0.0.1 on a free port, prints "port <n>" on stdout, and
 * runs until SIGTERM or SIGINT (or its parent exits). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>

static const char answer[] = "{\"ok\":true}";

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	static int first;
	struct MHD_Response *r;
	enum MHD_Result ret;

	(void)cls;
	(void)url;
	(void)method;
	(void)version;
	(void)upload_data;
	if (*con_cls == NULL) {
		*con_cls = &first;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0;	/* read and dropped */
		return MHD_YES;
	}
	r = MHD_create_response_from_buffer(sizeof(answer) - 1, (void *)answer,
	    MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/json") != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sa;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	struct sigaction act;
	long threads = argc > 1 ? atol(argv[1]) : sysconf(_SC_NPROCESSORS_ONLN);

	if (threads < 1)
		threads = 2;
	memset(&act, 0, sizeof(act));
	act.sa_handler = on_signal;
	if (sigaction(SIGTERM, &act, NULL) != 0 ||
	    sigaction(SIGINT, &act, NULL) != 0 ||
	    prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
		perror("http_ceiling: signals");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* kmsd's flags and limits (service/server.c, default settings) */
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	    MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, NULL,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
	    MHD_OPTION_CONNECTION_LIMIT, 1024u,
	    MHD_OPTION_CONNECTION_TIMEOUT, 30u,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
	    MHD_OPTION_END);
	if (d == NULL) {
		fprintf(stderr, "http_ceiling: cannot start libmicrohttpd on "
		    "127.0.0.1:0\n");
		return 1;
	}
	if ((info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)) == NULL ||
	    info->port == 0) {
		fprintf(stderr, "http_ceiling: no bound port\n");
		MHD_stop_daemon(d);
		return 1;
	}
	printf("port %u\n", (unsigned)info->port);
	fflush(stdout);
	while (!stop)
		sleep(1);	/* a signal cuts it short */
	MHD_stop_daemon(d);
	return 0;
}
