/* LD_PRELOAD for the multi-process training tests: every getnameinfo() answers with the numeric
 * address. torch's TCPStore names each peer with getnameinfo, and a v4-mapped (::ffff:127.0.0.1)
 * or ::1 peer is not in /etc/hosts, so glibc would send a PTR query to the DNS server, which is
 * not on loopback. Tests talk to loopback only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <sys/socket.h>

typedef int (*getnameinfo_fn)(const struct sockaddr *, socklen_t, char *, socklen_t, char *, socklen_t, int);

int getnameinfo(const struct sockaddr *addr, socklen_t addrlen, char *host, socklen_t hostlen,
                char *serv, socklen_t servlen, int flags) {
    static getnameinfo_fn real;
    if (!real) real = (getnameinfo_fn)dlsym(RTLD_NEXT, "getnameinfo");
    return real(addr, addrlen, host, hostlen, serv, servlen, flags | NI_NUMERICHOST);
}
